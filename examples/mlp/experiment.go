package main

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/gomlx/compute"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/layers"
	"github.com/gomlx/gomlx/ml/layers/activation"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/train"
	"github.com/gomlx/gomlx/ml/train/loss"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gradsub/gradsub/examples/mlp/data"
	"github.com/gradsub/gradsub/hooks"
)

// Setup is one of the write-up's training regimes.
type Setup struct {
	Name         string
	Epochs       int     // full-batch steps
	LearningRate float64 // plain gradient descent
	WarmUp       int     // N0
	Rank         int     // k
	CheckEvery   int     // K; 0 turns the drift refresh off
}

// Setups: "seed" is the original write-up's (20 epochs, warm-up 10, rank 2, no refresh);
// "trained" runs to convergence with a larger rank and the drift refresh on.
var Setups = []Setup{
	{Name: "seed", Epochs: 20, LearningRate: 0.5, WarmUp: 10, Rank: 2},
	{Name: "trained", Epochs: 500, LearningRate: 0.5, WarmUp: 10, Rank: 4, CheckEvery: hooks.DefaultCheckEvery},
}

// HiddenUnits of the two-layer MLP.
const HiddenUnits = 10

// firstLayerWeights is the projected variable: the first layer's weight matrix.
const firstLayerWeights = "/hidden/dense/weights"

// mlpModel is the original setup's network: features → 10 tanh units → one logit.
func mlpModel(scope *model.Scope, x *Node) *Node {
	h := layers.DenseWithBias(scope.In("hidden"), x, HiddenUnits)
	h = activation.Apply(activation.TypeTanh, h)
	return layers.DenseWithBias(scope.In("output"), h, 1)
}

// RunResult is one training run (one variant, one seed).
type RunResult struct {
	Accuracy     float64
	TrainSeconds float64 // wall time of the steps after the first (which compiles the graph)
	FLOPs        hooks.FLOPs
	Steps        int
	Report       hooks.Report
	Events       []hooks.Event
	Loss         []float64       // the training loss at every step
	History      []hooks.Sample  // the monitor's view after every step (projected runs)
	Times        hooks.StepTimes // projected runs: step times by what the step ran
}

// GradientWorkPerStep is the mean product work of turning the loss into an update over the run:
// back-propagation and the projection of the gradients, the optimizer's products (the lift), and
// the gated learning and checking amortised over the steps.
func (r RunResult) GradientWorkPerStep() float64 {
	gated := float64(r.FLOPs.Gated(r.Report)) / float64(r.Steps)
	return float64(r.FLOPs.Gradient+r.FLOPs.Optimizer) + gated
}

// trainOnce trains the MLP on the split with plain full-batch gradient descent: stock if projected
// is false, else with the first layer's weights in the gradient subspace of the given mode.
func trainOnce(backend compute.Backend, split DataSplit, setup Setup, mode hooks.Mode, seed int64, projected bool, logf func(string, ...any)) (RunResult, error) {
	store := model.NewStore()
	store.SetParam(model.ParamInitialSeed, seed)
	base := optimizer.StochasticGradientDescent().WithDecay(false).WithLearningRate(setup.LearningRate).Done()
	opt := hooks.Subspace(base).Mode(mode).Enabled(projected).
		Variables(firstLayerWeights).Rank(setup.Rank).WarmUp(setup.WarmUp).CheckEvery(setup.CheckEvery).Done()
	trainer := train.NewTrainer(backend, store, mlpModel, loss.BinaryCrossentropyLogits, opt, nil, nil)
	monitor := opt.NewMonitor(store)
	showPlan := projected && logf != nil
	monitor.Logf = logf

	var res RunResult
	var trainTime time.Duration
	batch := split.Train.Flat()
	for epoch := range setup.Epochs {
		x, y := batch.Tensors()
		stepStart := time.Now()
		metrics, err := trainer.TrainStep(train.Batch{Inputs: []*tensors.Tensor{x}, Labels: []*tensors.Tensor{y}})
		if err != nil {
			return res, err
		}
		elapsed := time.Since(stepStart)
		// The wall time is the steps' own (the first, which compiles, left out): the Monitor's
		// host-side reads after each step are an observer's cost, not the method's, and the
		// stock run has none.
		if epoch > 0 {
			trainTime += elapsed
		}
		res.Loss = append(res.Loss, float64(metrics[0].Value().(float32)))
		if showPlan && epoch == 0 {
			logf("%s", strings.TrimSpace(opt.PlanString()))
		}
		if projected {
			if err := monitor.ObserveTimed(elapsed); err != nil {
				return res, err
			}
		}
	}
	res.TrainSeconds = trainTime.Seconds()
	res.Steps = setup.Epochs
	var err error
	if res.FLOPs, err = opt.StepFLOPs(); err != nil {
		return res, err
	}
	if res.Report, err = opt.Report(store); err != nil {
		return res, err
	}
	res.Events, res.History, res.Times = monitor.Events, monitor.History, monitor.Times
	res.Accuracy, err = accuracy(backend, store, split.Test)
	return res, err
}

// accuracy evaluates the trained model on d: a positive logit predicts class 1.
func accuracy(backend compute.Backend, store *model.Store, d *data.Dataset) (float64, error) {
	exec, err := model.NewExec(backend, store, func(scope *model.Scope, x *Node) *Node {
		return mlpModel(scope, x)
	})
	if err != nil {
		return 0, err
	}
	x, _ := d.Tensors()
	out, err := exec.Call(x)
	if err != nil {
		return 0, err
	}
	logits := tensors.MustCopyFlatData[float32](out[0])
	correct := 0
	for i, logit := range logits {
		predicted := 0
		if logit > 0 {
			predicted = 1
		}
		if predicted == d.Y[i] {
			correct++
		}
	}
	return float64(correct) / float64(len(logits)), nil
}

// DataSplit is a standardised stratified train/test split of a dataset.
type DataSplit struct {
	Train, Test *data.Dataset
}

// TestFraction of the stratified split (the write-up's 75/25).
const TestFraction = 0.25

// MakeSplit splits and standardises d deterministically for a seed.
func MakeSplit(d *data.Dataset, seed int64) DataSplit {
	tr, te := data.StratifiedSplit(d, TestFraction, seed)
	data.Standardize(tr, te)
	return DataSplit{Train: tr, Test: te}
}

// Row is one line of the table: a dataset and setup, aggregated over seeds.
type Row struct {
	Dataset               string  `json:"dataset"`
	Setup                 string  `json:"setup"`
	Mode                  string  `json:"mode"`
	Seeds                 int     `json:"seeds"`
	Epochs                int     `json:"epochs"`
	Rank                  int     `json:"rank"`
	WarmUp                int     `json:"warmup"`
	BaselineAccuracy      float64 `json:"baseline_accuracy"`
	BaselineAccuracyStd   float64 `json:"baseline_accuracy_std"`
	SubspaceAccuracy      float64 `json:"subspace_accuracy"`
	SubspaceAccuracyStd   float64 `json:"subspace_accuracy_std"`
	DeltaAccuracy         float64 `json:"delta_accuracy"`
	BaselineGradientFLOPs float64 `json:"baseline_gradient_flops"`
	SubspaceGradientFLOPs float64 `json:"subspace_gradient_flops"`
	GradientFLOPsRatio    float64 `json:"gradient_flops_ratio"`
	BaselineSeconds       float64 `json:"baseline_seconds"`
	SubspaceSeconds       float64 `json:"subspace_seconds"`
	WallTimeRatio         float64 `json:"wall_time_ratio"`
	ExplainedVariance     float64 `json:"explained_variance"`
	Refreshes             float64 `json:"refreshes"`
	// ControllerOverhead is the share of the subspace runs' wall time that drift checks and
	// refreshes after warm-up took beyond a plain step (hooks.StepTimes), over all seeds;
	// WarmUpOverhead, the warm-up's learning steps'.
	ControllerOverhead float64 `json:"controller_overhead"`
	WarmUpOverhead     float64 `json:"warmup_overhead"`
	Backend            string  `json:"backend"`
	// FirstSeed is the first seed's subspace run, for the controller plot.
	FirstSeed RunResult `json:"-"`
}

// RunRow trains both variants on every seed and aggregates them.
func RunRow(backend compute.Backend, d *data.Dataset, setup Setup, mode hooks.Mode, seeds int, progress func(string, ...any), logf func(string, ...any)) (Row, error) {
	row := Row{Dataset: d.Name, Setup: setup.Name, Mode: mode.String(), Seeds: seeds, Epochs: setup.Epochs,
		Rank: setup.Rank, WarmUp: setup.WarmUp, Backend: backend.Name()}
	var baseAcc, subAcc, explained, refreshes []float64
	var baseSec, subSec, baseFLOPs, subFLOPs float64
	var times hooks.StepTimes
	for s := range seeds {
		seed := int64(s + 1)
		split := MakeSplit(d, seed)
		if progress != nil {
			progress("%s/%s/%s: seed %d of %d", d.Name, setup.Name, mode, s+1, seeds)
		}
		// Alternate which variant runs first, so drift in machine load does not favour one.
		var base, sub RunResult
		var err error
		runBase := func() error { base, err = trainOnce(backend, split, setup, mode, seed, false, nil); return err }
		runSub := func() error { sub, err = trainOnce(backend, split, setup, mode, seed, true, logf); return err }
		order := []func() error{runBase, runSub}
		if s%2 == 1 {
			order[0], order[1] = order[1], order[0]
		}
		for _, run := range order {
			if err := run(); err != nil {
				return row, fmt.Errorf("%s/%s seed %d: %w", d.Name, setup.Name, seed, err)
			}
		}
		baseAcc = append(baseAcc, base.Accuracy)
		subAcc = append(subAcc, sub.Accuracy)
		explained = append(explained, sub.Report.MeanExplainedVariance())
		refreshes = append(refreshes, float64(sub.Report.Refreshes))
		if s == 0 {
			row.FirstSeed = sub
		}
		times.Plain = append(times.Plain, sub.Times.Plain...)
		times.WarmUp = append(times.WarmUp, sub.Times.WarmUp...)
		times.Controller = append(times.Controller, sub.Times.Controller...)
		baseSec += base.TrainSeconds
		subSec += sub.TrainSeconds
		baseFLOPs += base.GradientWorkPerStep()
		subFLOPs += sub.GradientWorkPerStep()
	}
	row.BaselineAccuracy, row.BaselineAccuracyStd = meanStd(baseAcc)
	row.SubspaceAccuracy, row.SubspaceAccuracyStd = meanStd(subAcc)
	row.DeltaAccuracy = row.SubspaceAccuracy - row.BaselineAccuracy
	row.BaselineGradientFLOPs = baseFLOPs / float64(seeds)
	row.SubspaceGradientFLOPs = subFLOPs / float64(seeds)
	row.GradientFLOPsRatio = subFLOPs / baseFLOPs
	row.BaselineSeconds = baseSec / float64(seeds)
	row.SubspaceSeconds = subSec / float64(seeds)
	row.WallTimeRatio = subSec / baseSec
	row.ExplainedVariance, _ = meanStd(explained)
	row.Refreshes, _ = meanStd(refreshes)
	row.ControllerOverhead, row.WarmUpOverhead = times.ControllerOverhead(), times.WarmUpOverhead()
	return row, nil
}

func meanStd(xs []float64) (mean, std float64) {
	for _, x := range xs {
		mean += x
	}
	mean /= float64(len(xs))
	for _, x := range xs {
		std += (x - mean) * (x - mean)
	}
	if len(xs) > 1 {
		std = math.Sqrt(std / float64(len(xs)-1))
	}
	return mean, std
}
