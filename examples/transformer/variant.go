package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gomlx/compute"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/train"
	"github.com/gomlx/gomlx/ml/train/loss"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gradsub/gradsub/hooks"
	"github.com/gradsub/gradsub/internal/quality"
	"github.com/gradsub/gradsub/transformer"
	"github.com/schollz/progressbar/v3"
)

// Row is one variant's results.
type Row struct {
	Variant   string  `json:"variant"`
	Optimizer string  `json:"optimizer"`
	Mode      string  `json:"mode"` // stock, temporal or matrix
	Steps     int     `json:"steps"`
	TrainLoss float64 `json:"train_loss"` // mean batch loss over the last tenth of the steps
	EvalLoss  float64 `json:"eval_loss"`
	StepMs    float64 `json:"step_ms"`
	// BlockRatioMin and BlockRatioMax are the smallest and largest ratio of this variant's time to
	// AdamW's over the interleaved timing blocks: the spread is the machine's noise.
	BlockRatioMin float64 `json:"block_ratio_min,omitempty"`
	BlockRatioMax float64 `json:"block_ratio_max,omitempty"`
	TokensPerSec  float64 `json:"tokens_per_s"`
	GradientFLOPs float64 `json:"gradient_flops_per_step"` // incl. the gated learning amortised
	StepFLOPs     float64 `json:"step_flops_per_step"`
	// Ops and ScalarOps count the ops an ordinary step executes, and of them those with a single
	// value: a fixed cost each (dispatch on the Go backend, a kernel launch on a GPU).
	Ops          int   `json:"ops_per_step"`
	ScalarOps    int   `json:"scalar_ops_per_step"`
	StateBytes   int64 `json:"optimizer_state_bytes"`
	Refreshes    int64 `json:"refreshes"`
	BasesLearned int64 `json:"bases_learned"`
	// ControllerOverhead is the share of the wall time spent on drift checks and refreshes after
	// warm-up (hooks.StepTimes); WarmUpOverhead, on the warm-up's learning.
	ControllerOverhead float64        `json:"controller_overhead"`
	WarmUpOverhead     float64        `json:"warmup_overhead"`
	RankChanges        int64          `json:"rank_changes"`
	Compilations       int            `json:"compilations"` // step graphs built
	Backend            string         `json:"backend"`
	Batch, SeqLen      int            `json:"-"`
	TrainCurve         []float64      `json:"-"`
	History            []hooks.Sample `json:"-"` // the monitor's view after each step
	EvalCurve          []float64      `json:"-"`
	EvalCurveSteps     []int          `json:"-"`
}

func newOptimizer(variant string, o Options) (*hooks.Optimizer, error) {
	adamw := optimizer.Adam().LearningRate(o.LR).WeightDecay(o.WeightDecay).Done()
	switch variant {
	case galoreVariant:
		if o.Rank < 1 {
			return nil, fmt.Errorf("variant %s needs a rank: set -rank", galoreVariant)
		}
		return nil, nil // not the projector's: newReference
	case plainMatrixVariant:
		plain := o
		off, still := 0, 0.0
		plain.Complement, plain.ScaleAdaptation = &off, &still
		return newOptimizer("subspace-matrix", plain)
	case "adamw":
		return hooks.Subspace(adamw).Enabled(false).Done(), nil
	case "adam":
		return hooks.Subspace(optimizer.Adam().LearningRate(o.LR).Done()).Enabled(false).Done(), nil
	case "sgd":
		return hooks.Subspace(optimizer.StochasticGradientDescent().WithDecay(false).WithLearningRate(o.SGDLR).Done()).Enabled(false).Done(), nil
	case "subspace-temporal", "subspace-matrix":
		mode, warmUp := hooks.Matrix, o.WarmUp
		if variant == "subspace-temporal" {
			// The temporal basis is learned from the warm-up gradients: it needs at least rank.
			mode, warmUp = hooks.Temporal, max(o.WarmUp, o.Rank, hooks.DefaultRank, 10)
		}
		cfg := hooks.Subspace(adamw).Mode(mode).Rank(o.Rank).WarmUp(warmUp).CheckEvery(o.CheckEvery).WeightDecay(o.WeightDecay)
		if o.Rank > 0 || mode == hooks.Temporal {
			// A rank set by hand projects the 12 matrices whatever they cost (the figures in
			// docs/ compare ranks on them); with -rank 0 the one option chooses, as for a user.
			cfg = cfg.Matching(transformer.ProjectionPattern)
		}
		if o.Scale != nil {
			cfg = cfg.Scale(*o.Scale)
		}
		if o.Complement != nil && mode == hooks.Matrix {
			cfg = cfg.Complement(*o.Complement)
		}
		if o.ComplementScale != nil {
			cfg = cfg.ComplementScale(*o.ComplementScale)
		}
		if o.ScaleAdaptation != nil && mode == hooks.Matrix {
			cfg = cfg.ScaleAdaptation(*o.ScaleAdaptation)
		}
		if o.TrackingRate > 0 {
			cfg = cfg.TrackingRate(o.TrackingRate, max(o.TrackingRate, hooks.DefaultFastTrackingRate))
		}
		if o.MaxRank > 0 && mode == hooks.Matrix {
			cfg = cfg.RankBounds(max(1, o.rankOf(o.Model.Width, o.Model.Width)/2, o.rankOf(o.Model.Width, o.Model.MLP)/2), o.MaxRank)
		}
		if err := cfg.Validate(); err != nil {
			return nil, err
		}
		return cfg.Done(), nil
	}
	return nil, fmt.Errorf("unknown variant %q (use %s, or %s, %s)", variant, strings.Join(allVariants, ", "), galoreVariant, plainMatrixVariant)
}

// stepTimer runs more training steps of a trained variant and returns their wall time.
type stepTimer func(steps int) (time.Duration, error)

// runVariant trains one variant and measures it; the returned stepTimer lets run time its steps
// interleaved with the other variants'. Stock variants run through the wrapper with projection
// disabled, which is bit-for-bit the base optimizer and lets FLOPs be counted alike.
func runVariant(backend compute.Backend, corpus *transformer.Corpus, variant string, o Options) (Row, stepTimer, error) {
	row := variantRow(backend, variant, o)
	r, closeTrace, err := newVariantRun(backend, corpus, variant, o, row.Mode)
	if err != nil {
		return row, nil, err
	}
	defer closeTrace()
	if err := r.train(&row); err != nil {
		return row, nil, err
	}
	if err := r.measure(&row); err != nil {
		return row, nil, err
	}
	return row, r.timer, nil
}

// variantRow is a variant's row before training: what it is.
func variantRow(backend compute.Backend, variant string, o Options) Row {
	row := Row{Variant: variant, Steps: o.Steps, Backend: backend.Name(), Mode: "stock", Batch: o.Batch, SeqLen: o.Model.SeqLen}
	switch {
	case variant == plainMatrixVariant:
		row.Optimizer, row.Mode = "adamw", "matrix"
	case strings.HasPrefix(variant, "subspace-"):
		row.Optimizer, row.Mode = "adamw", strings.TrimPrefix(variant, "subspace-")
	case variant == galoreVariant:
		row.Optimizer, row.Mode = "adamw", "galore"
	default:
		row.Optimizer = variant
	}
	return row
}

// variantRun is one variant's training: its optimizer (nil for the reference GaLore), store,
// data and step, and the Monitor of a projected variant.
type variantRun struct {
	backend compute.Backend
	variant string
	o       Options
	opt     *hooks.Optimizer
	store   *model.Store
	step    func(x, y *tensors.Tensor) ([]*tensors.Tensor, error)
	batches *transformer.Batches
	evalSet []batchPair
	monitor *hooks.Monitor
	untimed int // the first steps compile the graph
	timed   time.Duration
}

// newVariantRun builds a variant's optimizer, trainer, step and data; closeTrace closes the
// Monitor's trace file, if any.
func newVariantRun(backend compute.Backend, corpus *transformer.Corpus, variant string, o Options, mode string) (r *variantRun, closeTrace func(), err error) {
	closeTrace = func() {}
	r = &variantRun{backend: backend, variant: variant, o: o, untimed: 3}
	if r.opt, err = newOptimizer(variant, o); err != nil {
		return nil, closeTrace, err
	}
	r.store = model.NewStore()
	r.store.SetParam(model.ParamInitialSeed, o.Seed) // the same initialisation for every variant
	var trainerOpt optimizer.Interface = r.opt
	var ref *quality.Reference
	var refGradients func(x, y *tensors.Tensor) (map[string]*tensors.Tensor, error)
	if variant == galoreVariant {
		ref = newReference(o)
		trainerOpt = ref
		refGradients = quality.ReferenceGradients(backend, r.store, o.Model.Logits, ref)
	}
	trainer := train.NewTrainer(backend, r.store, o.Model.Logits, loss.SparseCategoricalCrossEntropyLogits, trainerOpt, nil, nil)
	// step trains one step; GaLore first refreshes its bases where due, from the same batch.
	refStep := 0
	r.step = func(x, y *tensors.Tensor) ([]*tensors.Tensor, error) {
		if ref != nil {
			if refStep == 0 { // the reference's first refresh needs the variables: a forward pass creates them
				if _, err := evalLoss(backend, r.store, o, []batchPair{{tensors.MustCopyFlatData[int32](x), tensors.MustCopyFlatData[int32](y)}}); err != nil {
					return nil, err
				}
			}
			if err := ref.Refresh(r.store, refStep, func() (map[string]*tensors.Tensor, error) { return refGradients(x, y) }); err != nil {
				return nil, err
			}
			refStep++
		}
		return trainer.TrainStep(train.Batch{Inputs: []*tensors.Tensor{x}, Labels: []*tensors.Tensor{y}})
	}
	if r.batches, err = transformer.NewBatches(corpus.Train, o.Batch, o.Model.SeqLen, uint64(o.Seed)); err != nil {
		return nil, closeTrace, err
	}
	if r.evalSet, err = evalBatches(corpus.Eval, o); err != nil {
		return nil, closeTrace, err
	}
	if r.opt != nil && mode != "stock" {
		r.monitor = r.opt.NewMonitor(r.store)
		r.monitor.Trainer = trainer // lets the rank rule act
		if o.OutDir != "" {
			trace, err := os.Create(filepath.Join(o.OutDir, "trace-"+variant+".jsonl"))
			if err != nil {
				return nil, closeTrace, err
			}
			closeTrace = func() { trace.Close() }
			r.monitor.Trace = trace
		}
	}
	return r, closeTrace, nil
}

// train runs the variant's steps with a progress bar, and records its losses in row.
func (r *variantRun) train(row *Row) error {
	o := r.o
	var bar *progressbar.ProgressBar
	if !o.Quiet {
		bar = progressbar.NewOptions(o.Steps, progressbar.OptionSetWriter(os.Stderr),
			progressbar.OptionSetDescription(fmt.Sprintf("%-18s", r.variant)), progressbar.OptionShowCount(),
			progressbar.OptionSetWidth(30), progressbar.OptionClearOnFinish())
	}
	for i := range o.Steps {
		x, y := r.batches.Next()
		start := time.Now()
		metrics, err := r.step(x, y)
		if err != nil {
			return fmt.Errorf("%s, step %d: %w", r.variant, i, err)
		}
		elapsed := time.Since(start)
		if i >= r.untimed {
			r.timed += elapsed
		}
		lossValue := float64(metrics[0].Value().(float32))
		row.TrainCurve = append(row.TrainCurve, lossValue)
		if r.monitor != nil {
			if err := r.monitor.ObserveTimed(elapsed); err != nil {
				return err
			}
		}
		if (i+1)%o.EvalEvery == 0 || i+1 == o.Steps {
			ev, err := evalLoss(r.backend, r.store, o, r.evalSet)
			if err != nil {
				return err
			}
			row.EvalCurve = append(row.EvalCurve, ev)
			row.EvalCurveSteps = append(row.EvalCurveSteps, i+1)
		}
		if bar != nil {
			desc := fmt.Sprintf("%-18s loss %.3f", r.variant, lossValue)
			if r.monitor != nil {
				rep := r.monitor.Last()
				desc += fmt.Sprintf(" rank %s residual %.2f refreshes %d", meanRank(rep), rep.LastCheckResidual, rep.Refreshes)
			}
			bar.Describe(desc)
			_ = bar.Add(1)
		}
	}
	if bar != nil {
		_ = bar.Finish()
	}
	return nil
}

// measure fills row's figures after training: losses, step time, FLOPs, ops, what the projector
// did, and the optimizer's state.
func (r *variantRun) measure(row *Row) error {
	o := r.o
	tail := max(1, o.Steps/10)
	for _, l := range row.TrainCurve[o.Steps-tail:] {
		row.TrainLoss += l / float64(tail)
	}
	row.EvalLoss = row.EvalCurve[len(row.EvalCurve)-1]
	row.StepMs = float64(r.timed.Microseconds()) / 1000 / float64(max(1, o.Steps-r.untimed))
	row.TokensPerSec = float64(o.Batch*o.Model.SeqLen) / (row.StepMs / 1000)
	if r.opt != nil { // the reference's graph is not the projector's: its FLOPs are not counted
		flops, err := r.opt.StepFLOPs()
		if err != nil {
			return err
		}
		report, err := r.opt.Report(r.store)
		if err != nil {
			return err
		}
		gated := float64(flops.Gated(report)) / float64(o.Steps)
		row.GradientFLOPs = float64(flops.Gradient+flops.Optimizer) + gated
		row.StepFLOPs = float64(flops.Step()) + gated
		row.Ops, row.ScalarOps = flops.StepOps(), flops.Ops.Scalar
		row.Refreshes, row.BasesLearned = report.Refreshes, report.SVDs
		row.RankChanges, row.Compilations = report.RankChanges, r.opt.Builds()
	}
	if r.monitor != nil {
		row.History = r.monitor.History
		row.ControllerOverhead = r.monitor.Times.ControllerOverhead()
		row.WarmUpOverhead = r.monitor.Times.WarmUpOverhead()
	}
	row.StateBytes = optimizerStateBytes(r.store)
	if !o.Quiet && r.opt != nil && row.Mode != "stock" {
		fmt.Fprint(os.Stderr, r.opt.PlanString())
	}
	return nil
}

// timer runs more training steps of the trained variant and returns their wall time.
func (r *variantRun) timer(steps int) (time.Duration, error) {
	var total time.Duration
	for range steps {
		x, y := r.batches.Next()
		start := time.Now()
		metrics, err := r.step(x, y)
		if err != nil {
			return 0, err
		}
		_ = metrics[0].Value() // the loss on the host: the step has finished, on any backend
		total += time.Since(start)
	}
	return total, nil
}
