// Command quickstart is a GoMLX training program as GoMLX users write them — compute.MustNew,
// params with -set, train.NewLoop with a progress bar, checkpoints that resume — with the
// projector added by one option: the optimizer it already used, wrapped. It trains a
// 64-256-256-10 MLP on the digits images (testdata/digits.csv.gz), 256 images a step, and prints
// held-out accuracy and what the projector did: at the automatic rank it projects the 256×256
// layer (its gradient products 0.65 of stock's) and says why it leaves the others out.
//
//	GOTOOLCHAIN=auto GOEXPERIMENT=simd go run ./examples/quickstart
//	GOTOOLCHAIN=auto GOEXPERIMENT=simd go run ./examples/quickstart -set "subspace_enabled=false"   # stock Adam
//	GOTOOLCHAIN=auto GOEXPERIMENT=simd go run ./examples/quickstart -set "subspace_rank=8;subspace_mode=temporal"
//	GOTOOLCHAIN=auto GOEXPERIMENT=simd go run ./examples/quickstart -checkpoint /tmp/qs   # run twice: it resumes
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"

	"github.com/gomlx/compute"
	_ "github.com/gomlx/compute/gobackend" // the embedded Go backend (import github.com/gomlx/gomlx/backends/default for XLA too)
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/ml/dataset"
	"github.com/gomlx/gomlx/ml/layers"
	"github.com/gomlx/gomlx/ml/layers/activation"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/model/checkpoint"
	"github.com/gomlx/gomlx/ml/train"
	"github.com/gomlx/gomlx/ml/train/loss"
	"github.com/gomlx/gomlx/ml/train/metric"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gomlx/gomlx/ui/commandline"
	"github.com/gradsub/gradsub/examples/mlp/data"
	"github.com/gradsub/gradsub/hooks"
)

// Options are the program's flags.
type Options struct {
	Settings   string // -set
	Checkpoint string // directory: save every 100 steps, resume from the last
	Steps      int    // train to this global step
	Quiet      bool   // no progress bar (tests)
}

func main() {
	store := newStore()
	var o Options
	settings := commandline.CreateSettingsFlag(store, "set")
	flag.StringVar(&o.Checkpoint, "checkpoint", "", "directory to save checkpoints in and resume from")
	flag.IntVar(&o.Steps, "steps", 600, "train up to this global step")
	flag.BoolVar(&o.Quiet, "q", false, "no progress bar")
	flag.Parse()
	o.Settings = *settings
	if err := run(compute.MustNew(), store, o); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// newStore holds the program's params: its own and the projector's (hooks.DefaultParams), so
// that -set can change any of them.
func newStore() *model.Store {
	store := model.NewStore()
	store.SetParams(hooks.DefaultParams())
	store.SetParams(map[string]any{
		optimizer.ParamLearningRate: 3e-3,
		// 256 rows a step: where the one option projects the 256×256 layer (at 32 nothing pays,
		// and the plan says so per weight).
		"batch_size": 256,
		"hidden":     256,
	})
	return store
}

func modelFn(scope *model.Scope, inputs []*Node) []*Node {
	h := inputs[0]
	hidden := model.GetParamOr(scope, "hidden", 256)
	for i := range 2 {
		h = activation.Apply(activation.TypeTanh, layers.DenseWithBias(scope.In("hidden_%d", i), h, hidden))
	}
	return []*Node{layers.DenseWithBias(scope.In("output"), h, 10)}
}

// digits returns the training and held-out sets (360 images), split by a fixed seed.
func digits(backend compute.Backend, batch int) (trainDS, evalDS train.Dataset, err error) {
	set, err := data.Digits("")
	if err != nil {
		return nil, nil, err
	}
	perm := rand.New(rand.NewPCG(1, 2)).Perm(len(set.Y))
	split := func(idx []int) (xs [][]float32, ys [][]int32) {
		for _, i := range idx {
			row := make([]float32, len(set.X[i]))
			for j, v := range set.X[i] {
				row[j] = float32(v / 16)
			}
			xs, ys = append(xs, row), append(ys, []int32{int32(set.Y[i])})
		}
		return
	}
	xs, ys := split(perm[360:])
	tr, err := dataset.InMemoryFromData(backend, "digits-train", []any{xs}, []any{ys})
	if err != nil {
		return nil, nil, err
	}
	xs, ys = split(perm[:360])
	ev, err := dataset.InMemoryFromData(backend, "digits-eval", []any{xs}, []any{ys})
	if err != nil {
		return nil, nil, err
	}
	return tr.BatchSize(batch, true).Shuffle().Infinite(true), ev.BatchSize(360, false), nil
}

func run(backend compute.Backend, store *model.Store, o Options) error {
	paramsSet, err := commandline.ParseSettings(store, o.Settings)
	if err != nil {
		return err
	}
	ckpt, err := openCheckpoint(store, o.Checkpoint, paramsSet)
	if err != nil {
		return err
	}
	trainDS, evalDS, err := digits(backend, model.GetParamOr(store.RootScope(), "batch_size", 256))
	if err != nil {
		return err
	}

	// The one option: the optimizer the program used, wrapped. Its options come from the params.
	opt := hooks.Subspace(optimizer.Adam().Done()).FromScope(store.RootScope()).Done()

	trainer := train.NewTrainer(backend, store, modelFn, loss.SparseCategoricalCrossEntropyLogits, opt,
		[]metric.Interface{metric.NewMovingAverageSparseCategoricalAccuracy("accuracy", "~acc", 0.05)},
		[]metric.Interface{metric.NewSparseCategoricalAccuracy("accuracy", "acc")})
	loop := train.NewLoop(trainer)
	monitor := opt.NewMonitor(store)
	monitor.AttachToLoop(loop)
	if !o.Quiet {
		monitor.Logf = nil // log lines would tear the bar: its "subspace" column says what happens
		commandline.AttachProgressBar(loop, monitor.ProgressMetric())
	}
	if ckpt != nil {
		train.EveryNSteps(loop, 100, "checkpoint", 100, ckpt.SaveOnStepFn)
	}
	if _, err := loop.RunToGlobalStep(trainDS, o.Steps); err != nil {
		return err
	}
	if ckpt != nil {
		if err := ckpt.Save(); err != nil {
			return err
		}
	}
	metrics, err := trainer.Eval(evalDS)
	if err != nil {
		return err
	}
	fmt.Printf("held-out: loss %.3f, accuracy %.3f (global step %d)\n", metrics[0].Value(), metrics[1].Value(), loop.LoopStep)
	fmt.Print(opt.PlanString())
	if report, err := opt.Report(store); err == nil && !report.Disabled { // disabled: the plan said so
		fmt.Println(report)
	}
	return nil
}

// openCheckpoint opens the checkpoint directory dir ("": none), resuming from its newest readable
// checkpoint; the params given with -set (paramsSet) win over the ones it restores.
func openCheckpoint(store *model.Store, dir string, paramsSet []string) (*checkpoint.Handler, error) {
	if dir == "" {
		return nil, nil
	}
	// A process killed while saving leaves the newest checkpoint truncated, and GoMLX would
	// fail on it: set such files aside so that the newest readable one loads.
	aside, err := hooks.SetAsideUnreadableCheckpoints(dir)
	if err != nil {
		return nil, err
	}
	for _, name := range aside {
		fmt.Fprintf(os.Stderr, "checkpoint %s is unreadable (a save was interrupted): set aside, resuming from the one before\n", name)
	}
	// A resumed checkpoint restores its params; those given with -set win (GoMLX's idiom).
	return checkpoint.Build(store).Dir(dir).ExcludeParams(paramsSet...).Keep(2).Done()
}
