package quality

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/gomlx/compute"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/train"
	"github.com/gomlx/gomlx/ml/train/loss"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gradsub/gradsub/hooks"
)

// Variants of the suite, in the table's order.
const (
	Stock    = "stock"    // GoMLX's Adam
	GaLore   = "galore"   // the reference: full gradient, exact SVD every 200 steps, projection
	Random   = "random"   // the reference with a fixed random orthonormal basis
	Matrix   = "matrix"   // the projector, matrix mode, default options (the complement on)
	Plain    = "plain"    // the projector, matrix mode without the complement or the step-length rule (Complement(0), ScaleAdaptation(0)): the published method's step, tracked
	Temporal = "temporal" // the projector, temporal mode, default options
	Default  = "default"  // the projector with no option at all: matrix mode at its automatic rank
)

// Variants lists every variant.
var Variants = []string{Stock, GaLore, Random, Plain, Matrix, Temporal, Default}

// Result is one training run's outcome.
type Result struct {
	Task, Variant string
	Seed          int64
	Rank          int     // the task's rank it ran at (the projecting variants' and the reference's)
	LR            float64 // the learning rate it trained at
	EvalLoss      float64
	Accuracy      float64
	StepMs        float64
	Notes         string   // what the projector reported (refreshes, skipped steps)
	Ranks         []int    // the projector's ranks at the end, per projected variable
	Projected     []string // the variables the projector (or the reference) projected
}

// Options change a run; zero values keep the task's.
type Options struct {
	Steps  int
	Config func(c *hooks.Config) *hooks.Config // extra options of the projector variants
	Trace  func(step int, loss float64)        // called with each step's training loss
}

func lossOf(labels, logits *Node) *Node {
	l := loss.SparseCategoricalCrossEntropyLogits([]*Node{labels}, []*Node{logits})
	if !l.IsScalar() {
		l = ReduceAllMean(l)
	}
	return l
}

// NewOptimizer returns a variant's optimizer for a task (the projector's, or the reference).
func NewOptimizer(t Task, variant string, o Options) (optimizer.Interface, error) {
	adam := optimizer.Adam().LearningRate(t.LR).Done()
	var cfg *hooks.Config
	switch variant {
	case Stock:
		return adam, nil
	case GaLore, Random:
		return NewReference(t, variant == Random), nil
	case Matrix: // default options but the rank: the default selection picks the variables
		cfg = hooks.Subspace(adam).Rank(t.Rank)
	case Plain:
		cfg = hooks.Subspace(adam).Rank(t.Rank).Complement(0).ScaleAdaptation(0)
	case Default: // one option: the wrapper, as a user adds it
		cfg = hooks.Subspace(adam)
	case Temporal: // the temporal basis is learned from the warm-up's gradients: at least rank of them
		cfg = hooks.Subspace(adam).Mode(hooks.Temporal).Rank(t.Rank).WarmUp(max(hooks.DefaultWarmUp, t.Rank)).Matching(t.Project)
	default:
		return nil, fmt.Errorf("quality: unknown variant %q (use one of %v)", variant, Variants)
	}
	if o.Config != nil {
		cfg = o.Config(cfg)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg.Done(), nil
}

// Run trains one variant of a task from the seed's initialisation on the seed's batches and
// evaluates it on the seed's held-out set.
func Run(backend compute.Backend, t Task, variant string, seed int64, o Options) (res Result, err error) {
	res = Result{Task: t.Name, Variant: variant, Seed: seed, Rank: t.Rank, LR: t.LR}
	// A task's data may be missing (the digits are read from the repository's testdata/): its
	// loader panics with the fix, which a caller gets as an error.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s/%s: %v", t.Name, variant, r)
		}
	}()
	opt, err := NewOptimizer(t, variant, o)
	if err != nil {
		return res, err
	}
	steps := t.Steps
	if o.Steps > 0 {
		steps = o.Steps
	}
	store := model.NewStore()
	store.SetParam(model.ParamInitialSeed, seed)
	trainer := train.NewTrainer(backend, store, t.Model, loss.SparseCategoricalCrossEntropyLogits, opt, nil, nil)
	ref, _ := opt.(*Reference)
	// The projector runs as a user runs it, with its Monitor on the trainer: the rank rule
	// (RankBounds) acts through it.
	var monitor *hooks.Monitor
	if h, ok := opt.(*hooks.Optimizer); ok {
		monitor = h.NewMonitor(store)
		monitor.Trainer = trainer
	}
	var grads func(x, y *tensors.Tensor) (map[string]*tensors.Tensor, error)
	if ref != nil {
		grads = gradientExec(backend, store, t, ref)
		// Variables are created (and initialised from the seed) by a forward pass first.
		if _, _, err := evaluate(backend, store, t, seed); err != nil {
			return res, err
		}
	}
	start := time.Now()
	if err := trainSteps(trainer, t, variant, seed, steps, ref, grads, monitor, o.Trace); err != nil {
		return res, err
	}
	res.StepMs = float64(time.Since(start).Microseconds()) / 1e3 / float64(steps)
	res.EvalLoss, res.Accuracy, err = evaluate(backend, store, t, seed)
	if err != nil {
		return res, err
	}
	describe(&res, opt, store)
	return res, nil
}

// trainSteps trains steps steps of the task's batches for seed; the reference GaLore (ref) first
// refreshes its bases where due, from the same batch (grads: its full gradients); the Monitor,
// if any, observes every step, and trace gets each step's training loss.
func trainSteps(trainer *train.Trainer, t Task, variant string, seed int64, steps int, ref *Reference,
	grads func(x, y *tensors.Tensor) (map[string]*tensors.Tensor, error), monitor *hooks.Monitor, trace func(step int, loss float64)) error {
	for step := range steps {
		x, y := t.Batch(seed, step)
		if ref != nil {
			err := ref.Refresh(trainer.Store(), step, func() (map[string]*tensors.Tensor, error) {
				gx, gy := t.Batch(seed, step)
				return grads(gx, gy)
			})
			if err != nil {
				return fmt.Errorf("%s/%s: GaLore refresh at step %d: %w", t.Name, variant, step, err)
			}
		}
		metrics, err := trainer.TrainStep(train.Batch{Inputs: []*tensors.Tensor{x}, Labels: []*tensors.Tensor{y}})
		if err != nil {
			return fmt.Errorf("%s/%s: step %d: %w", t.Name, variant, step, err)
		}
		if trace != nil {
			trace(step, float64(tensors.ToScalar[float32](metrics[0])))
		}
		if monitor != nil {
			if err := monitor.Observe(); err != nil {
				return fmt.Errorf("%s/%s: step %d: %w", t.Name, variant, step, err)
			}
		}
	}
	return nil
}

// describe fills res's notes and projected variables from the optimizer after training.
func describe(res *Result, opt optimizer.Interface, store *model.Store) {
	switch opt := opt.(type) {
	case *hooks.Optimizer:
		if rep, err := opt.Report(store); err == nil {
			var residuals []string
			for _, v := range rep.Variables {
				residuals = append(residuals, fmt.Sprintf("%.2f", v.Residual))
				res.Ranks = append(res.Ranks, v.Rank)
			}
			res.Notes = fmt.Sprintf("refreshes %d, skipped %d, ranks %s, residuals %s", rep.Refreshes, rep.SkippedSteps, rep.Ranks(), strings.Join(residuals, ","))
		}
		for _, e := range opt.Plan() {
			if e.Route != hooks.RouteFull {
				res.Projected = append(res.Projected, e.Variable)
			}
		}
	case *Reference:
		for v := range store.IterVariables() {
			if opt.projected(v) {
				res.Projected = append(res.Projected, v.Path())
			}
		}
	}
}

// evaluate returns the mean cross-entropy and the accuracy of the model on the eval set.
func evaluate(backend compute.Backend, store *model.Store, t Task, seed int64) (lossValue, accuracy float64, err error) {
	exec, err := model.NewExec(backend, store, func(scope *model.Scope, x *Node) *Node {
		return t.Model(scope, []*Node{x})[0]
	})
	if err != nil {
		return 0, 0, err
	}
	x, y := t.Eval(seed)
	outs, err := exec.Exec(x)
	if err != nil {
		return 0, 0, err
	}
	logits := tensors.MustCopyFlatData[float32](outs[0])
	labels := tensors.MustCopyFlatData[int32](y)
	classes := len(logits) / len(labels)
	var total float64
	correct := 0
	for i, label := range labels {
		row := logits[i*classes : (i+1)*classes]
		best, maxV := 0, row[0]
		for j, v := range row {
			if v > maxV {
				best, maxV = j, v
			}
		}
		var sum float64
		for _, v := range row {
			sum += math.Exp(float64(v - maxV))
		}
		total += math.Log(sum) - float64(row[label]-maxV)
		if best == int(label) {
			correct++
		}
	}
	return total / float64(len(labels)), float64(correct) / float64(len(labels)), nil
}

// Summary is the mean and standard deviation of a variant's results over seeds, at one learning
// rate.
type Summary struct {
	Task, Variant              string
	Rank                       int
	LR                         float64
	Loss, LossStd, Acc, AccStd float64
	StepMs                     float64
	Runs                       []Result
}

// Summarize groups results by task, variant, rank and learning rate, in the order given.
func Summarize(results []Result) []Summary {
	var out []Summary
	index := map[string]int{}
	for _, r := range results {
		key := fmt.Sprintf("%s\x00%s\x00%d\x00%g", r.Task, r.Variant, r.Rank, r.LR)
		i, ok := index[key]
		if !ok {
			i = len(out)
			index[key] = i
			out = append(out, Summary{Task: r.Task, Variant: r.Variant, Rank: r.Rank, LR: r.LR})
		}
		out[i].Runs = append(out[i].Runs, r)
	}
	for i := range out {
		var l, a, ms []float64
		for _, r := range out[i].Runs {
			l, a, ms = append(l, r.EvalLoss), append(a, r.Accuracy), append(ms, r.StepMs)
		}
		out[i].Loss, out[i].LossStd = meanStd(l)
		out[i].Acc, out[i].AccStd = meanStd(a)
		out[i].StepMs, _ = meanStd(ms)
	}
	return out
}

// AtBestRate keeps, of each task, variant and rank, the summary at the learning rate with the lowest
// mean eval loss: a learning-rate sweep's answer to "each variant at its best rate", in the
// order the pairs first appear. A pair whose every rate diverged (NaN losses) keeps its first.
func AtBestRate(summaries []Summary) []Summary {
	var out []Summary
	index := map[string]int{}
	for _, s := range summaries {
		key := fmt.Sprintf("%s\x00%s\x00%d", s.Task, s.Variant, s.Rank)
		i, ok := index[key]
		switch {
		case !ok:
			index[key] = len(out)
			out = append(out, s)
		case s.Loss < out[i].Loss || (math.IsNaN(out[i].Loss) && !math.IsNaN(s.Loss)):
			out[i] = s
		}
	}
	return out
}
