package hooks_test

import (
	"fmt"
	"math/rand/v2"

	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/layers"
	"github.com/gomlx/gomlx/ml/layers/activation"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/train"
	"github.com/gomlx/gomlx/ml/train/loss"
	"github.com/gomlx/gomlx/ml/train/metric"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gradsub/gradsub/hooks"
	"github.com/gradsub/gradsub/internal/backends"
)

// exampleModel is a 32-64-1 MLP.
func exampleModel(scope *model.Scope, x *Node) *Node {
	h := activation.Relu(layers.DenseWithBias(scope.In("hidden"), x, 64))
	return layers.DenseWithBias(scope.In("output"), h, 1)
}

// exampleBatch is a fixed regression batch of 128 examples.
func exampleBatch() train.Batch {
	rng := rand.New(rand.NewPCG(1, 2))
	xs, ys := make([]float32, 128*32), make([]float32, 128)
	for i := range xs {
		xs[i] = float32(rng.NormFloat64())
	}
	for i := range ys {
		ys[i] = xs[i*32] - xs[i*32+1]
	}
	return train.Batch{Inputs: []*tensors.Tensor{tensors.FromFlatDataAndDimensions(xs, 128, 32)},
		Labels: []*tensors.Tensor{tensors.FromFlatDataAndDimensions(ys, 128, 1)}}
}

// The one option: wrap the optimizer the program already uses. After the first step the plan
// says what happens to each variable, and why. A forced rank (here 8) projects what it can,
// whatever it costs, and the plan gives the price: each weight's products as a multiple of the
// ∂W they replace and its optimizer state, the totals, and, as on a model this small, that the
// step costs more than stock's.
func ExampleSubspace() {
	backend, _ := backends.New("go")
	store := model.NewStore()
	opt := hooks.Subspace(optimizer.Adam().Done()).Rank(8).Done() // was: optimizer.Adam().Done()
	trainer := train.NewTrainer(backend, store, exampleModel, loss.MeanSquaredError, opt, nil, nil)
	if _, err := trainer.TrainStep(exampleBatch()); err != nil {
		panic(err)
	}
	fmt.Print(opt.PlanString())
	// Output:
	// subspace (matrix mode, rank 8):
	//   /hidden/dense/weights  [32 64]  direct, left side, rank 8 + 16 random  1.74×∂W, state 16.0 KiB→11.0 KiB  FusedDense: x[128×32]·W[32×64]; ∂W never built
	//   /hidden/dense/biases   [64]     full                                                                     a vector: biases, scales and gains keep full updates
	//   /output/dense/weights  [64 1]   full                                                                     left out by the default selection: the output head (no other weight's product follows it): a low-rank basis would move the outputs in only Rank directions
	//   /output/dense/biases   [1]      full                                                                     a vector: biases, scales and gains keep full updates
	//   price, estimated from the shapes: the projected weights' gradient products 524.3KFLOP → 913.4KFLOP a step; their optimizer state 16.0 KiB → 11.0 KiB
	//   this plan makes a step cost more than stock's: 389.1KFLOP more a step (+33% of stock's step), for 5.0 KiB less optimizer state
}

// A Monitor observes the store after steps (here by hand; AttachToLoop does it for a
// train.Loop) and logs what the projector did; Report is its state at any time.
func ExampleOptimizer_NewMonitor() {
	backend, _ := backends.New("go")
	store := model.NewStore()
	store.SetParam(model.ParamInitialSeed, int64(1)) // the same initialisation run after run
	opt := hooks.Subspace(optimizer.Adam().LearningRate(0.01).Done()).Rank(8).CheckEvery(10).Done()
	trainer := train.NewTrainer(backend, store, exampleModel, loss.MeanSquaredError, opt, nil, nil)
	monitor := opt.NewMonitor(store)
	monitor.Logf = func(format string, args ...any) { fmt.Printf(format+"\n", args...) }
	for range 40 {
		if _, err := trainer.TrainStep(exampleBatch()); err != nil {
			panic(err)
		}
		if err := monitor.Observe(); err != nil {
			panic(err)
		}
	}
	report, _ := opt.Report(store)
	fmt.Printf("steps %d, checks %d, refreshes %d, skipped %d, ranks %s\n", report.Steps, report.Checks, report.Refreshes, report.SkippedSteps, report.Ranks())
	// Output:
	// subspace: step 1: basis learned (warm-up); fast tracking for 10 steps; explained variance 0.198
	// steps 40, checks 3, refreshes 0, skipped 0, ranks 8
}

// The README's snippet, compiled as it stands there (TestREADMESnippetIsCompiled keeps the two
// the same): a GoMLX program's trainer, with the optimizer wrapped. On a model this small at
// batch 128 no matrix pays for its projection, and the step is Adam's own.
func Example_oneOption() {
	backend, _ := backends.New("go")
	store := model.NewStore()
	modelFn, lossFn := exampleModel, loss.MeanSquaredError
	var trainMetrics, evalMetrics []metric.Interface
	opt := hooks.Subspace(optimizer.Adam().Done()).Done() // was: optimizer.Adam().Done()
	trainer := train.NewTrainer(backend, store, modelFn, lossFn, opt, trainMetrics, evalMetrics)
	if _, err := trainer.TrainStep(exampleBatch()); err != nil {
		panic(err)
	}
	report, _ := opt.Report(store)
	fmt.Println("nothing projected:", report.NothingProjected)
	// Output:
	// nothing projected: true
}
