package main

import (
	"fmt"
	"iter"
	mathrand "math/rand"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/gomlx/compute"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/dataset"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/train"
	"github.com/gomlx/gomlx/ml/train/loss"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gradsub/gradsub/hooks"
)

type variant struct {
	opt     *hooks.Optimizer
	store   *model.Store
	trainer *train.Trainer
}

func newVariant(backend compute.Backend, c Config, projected, frozenProjected bool) *variant {
	store := model.NewStore()
	store.SetParam(model.ParamInitialSeed, int64(1))
	cfg := hooks.Subspace(optimizer.Adam().Done()).Enabled(projected).Rank(c.Rank).Complement(c.Complement)
	if c.Projected != nil {
		cfg = cfg.Variables(c.Projected...)
	}
	opt := cfg.Done()
	modelFn := c.model
	if frozenProjected {
		// The projected layers frozen: the step graph's gradient FLOPs are then those of the
		// other layers, which both variants share.
		modelFn = func(scope *model.Scope, x *Node) *Node {
			y := c.model(scope, x)
			for v := range scope.Store().IterVariables() {
				if c.isProjected(v) {
					v.SetTrainable(false)
				}
			}
			return y
		}
	}
	trainer := train.NewTrainer(backend, store, modelFn, loss.SparseCategoricalCrossEntropyLogits, opt, nil, nil)
	return &variant{opt: opt, store: store, trainer: trainer}
}

// deviceExamples is how many batches' worth of random examples the device feed holds.
const deviceExamples = 16

// feeder returns the next batch; the trainer takes ownership of it.
type feeder func() (train.Batch, error)

func newFeeder(backend compute.Backend, c Config, feed string, rng *rand.Rand) (feeder, func(), error) {
	switch feed {
	case feedHost:
		return func() (train.Batch, error) {
			x, y := c.examples(rng, c.Batch)
			return train.Batch{
				Inputs: []*tensors.Tensor{tensors.FromFlatDataAndDimensions(x, c.Batch, c.Input)},
				Labels: []*tensors.Tensor{tensors.FromFlatDataAndDimensions(y, c.Batch, 1)},
			}, nil
		}, func() {}, nil
	case feedDevice:
		n := deviceExamples * c.Batch
		x, y := c.examples(rng, n)
		ds, err := dataset.InMemoryFromData(backend, "bench-"+c.Name,
			[]any{tensors.FromFlatDataAndDimensions(x, n, c.Input)}, []any{tensors.FromFlatDataAndDimensions(y, n, 1)})
		if err != nil {
			return nil, nil, err
		}
		ds.BatchSize(c.Batch, true).Infinite(true).Shuffle().WithRand(mathrand.New(mathrand.NewSource(int64(rng.Uint64()))))
		next, stop := iter.Pull2(ds.Iter())
		return func() (train.Batch, error) {
			b, err, ok := next()
			if !ok {
				return b, fmt.Errorf("the device feed of %s ended", c.Name)
			}
			return b, err
		}, func() { stop(); ds.FinalizeAll() }, nil
	}
	return nil, nil, fmt.Errorf("unknown -feed %q (use %s or %s)", feed, feedDevice, feedHost)
}

// examples returns n random examples and their labels.
func (c Config) examples(rng *rand.Rand, n int) ([]float32, []int32) {
	x := make([]float32, n*c.Input)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	y := make([]int32, n)
	for i := range y {
		y[i] = int32(rng.IntN(c.Classes))
	}
	return x, y
}

func (v *variant) steps(next feeder, n int) (time.Duration, error) {
	var total time.Duration
	for range n {
		b, err := next() // outside the timed region
		if err != nil {
			return 0, err
		}
		start := time.Now()
		if _, err := v.trainer.TrainStep(b); err != nil {
			return 0, err
		}
		total += time.Since(start)
	}
	return total, nil
}

// stateBytes sums the optimizer state kept for the projected variables: the base optimizer's
// (under its scope) and the projector's (bases, coefficients).
func stateBytes(store *model.Store, c Config) int64 {
	var projected []string
	for v := range store.IterVariables() {
		if v.Trainable && c.isProjected(v) {
			projected = append(projected, v.Path())
		}
	}
	var total int64
	for v := range store.IterVariables() {
		if v.Trainable {
			continue
		}
		for _, p := range projected {
			if strings.HasSuffix(v.Scope(), strings.TrimSuffix(p, "/weights")) && strings.HasPrefix(v.Name(), "weights") {
				total += int64(v.Shape().ByteSize())
				break
			}
		}
	}
	return total
}
