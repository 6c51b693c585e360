// Package quality is the quality suite: small models written independently of the projector
// (an attention language model with rank-3 weights, an MLP classifier and a conv net), each
// trained from the same initialisation and on the same batches with stock Adam, a reference
// implementation of GaLore, a fixed random basis, and the projector in matrix and temporal mode.
//
// It is test and example support, not product API: the reference lives here so that a quality
// figure is always read beside the published method's in the same harness.
package quality

import (
	"math"
	"math/rand/v2"

	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/model"
)

// Task is a model, its data and its schedule.
type Task struct {
	Name  string
	Model func(scope *model.Scope, inputs []*Node) []*Node // logits: [batch, (seq,) classes]
	// Batch returns the training batch of a step (the same for every variant of a seed).
	Batch func(seed int64, step int) (x, y *tensors.Tensor)
	// Eval is the held-out set, fixed per seed.
	Eval    func(seed int64) (x, y *tensors.Tensor)
	Steps   int
	LR      float64
	Rank    int
	Project string // regular expression of the projected variables' paths
	// View is a projected weight as the matrix the reference projects: [m, n] for a weight
	// used as y = x·W (m the contracted side).
	View func(path string, dims []int) (m, n int)
	// Seeds is how many seeds the suite averages over: enough for its seed-to-seed spread to
	// tell a 10% difference of mean eval loss.
	Seeds int
	// Skip names variants not run on this task, and why.
	Skip map[string]string
	// MatrixWithin, if set, bounds matrix mode's mean eval loss at the task's rank against
	// stock's: the quality the complement holds at a low rank, measured over the task's seeds
	// (docs/quality.md), with a margin for the seeds' spread.
	MatrixWithin float64
}

// A synthetic task draws n examples from a random stream: a step's batch from the seed's stream
// step+1, the eval set from its stream 0, the same for every variant of a seed.
type generator func(rng *rand.Rand, n int) (x, y *tensors.Tensor)

func seededBatches(gen generator, batch int) func(seed int64, step int) (x, y *tensors.Tensor) {
	return func(seed int64, step int) (x, y *tensors.Tensor) {
		return gen(rand.New(rand.NewPCG(uint64(seed), uint64(step)+1)), batch)
	}
}

func seededEval(gen generator, n int) func(seed int64) (x, y *tensors.Tensor) {
	return func(seed int64) (x, y *tensors.Tensor) { return gen(rand.New(rand.NewPCG(uint64(seed), 0)), n) }
}

func rows(dims []int) (m, n int) {
	m = dims[0]
	n = 1
	for _, d := range dims[1:] {
		n *= d
	}
	return m, n
}

// Tasks is the suite.
func Tasks() []Task {
	return []Task{AttentionLM(), TiedAttentionLM(), MLPClassifier(), ConvNet(), WideMLP()}
}

// meanStd of a sample.
func meanStd(xs []float64) (mean, std float64) {
	for _, x := range xs {
		mean += x
	}
	mean /= float64(len(xs))
	if len(xs) < 2 {
		return mean, 0
	}
	for _, x := range xs {
		std += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(std / float64(len(xs)-1))
}
