// Command transformer trains the same decoder-only transformer, from the same initialisation and
// on the same batches, with stock AdamW, Adam and SGD, and with the gradient-subspace projector
// wrapping AdamW in temporal and in matrix mode, then prints one side-by-side table and writes the
// loss curves (PNG), a markdown report and, with -json, the rows for scripts.
//
//	GOTOOLCHAIN=auto GOEXPERIMENT=simd go run ./examples/transformer
//	GOTOOLCHAIN=auto GOEXPERIMENT=simd go run ./examples/transformer -steps 600 -width 512 -depth 4 -backend xla:cuda
//
// The task is byte-level language modelling on the Go standard library's source tree (present
// wherever Go runs) or on the files named with -corpus.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/support/humanize"
	"github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/train"
	"github.com/gomlx/gomlx/ml/train/loss"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gradsub/gradsub/hooks"
	"github.com/gradsub/gradsub/internal/backends"
	"github.com/gradsub/gradsub/internal/figures"
	"github.com/gradsub/gradsub/internal/plots"
	"github.com/gradsub/gradsub/internal/quality"
	"github.com/gradsub/gradsub/transformer"
	"github.com/schollz/progressbar/v3"
)

// rankOf is the matrix subspace's rank for a projection [m, n]: -rank, or with -rank 0 the
// wrapper's automatic rank for that matrix at this batch (hooks.AutoRank; 0: left out). At width
// 256 and 1,024 rows per step that is 48 for all 12 projections.
func (o Options) rankOf(m, n int) int {
	if o.Rank > 0 {
		return o.Rank
	}
	return hooks.AutoRank(m, n, o.Batch*o.Model.SeqLen)
}

// rankDesc describes the rank for the report: "8", or the automatic ranks of the attention and
// MLP projections.
func (o Options) rankDesc() string {
	if o.Rank > 0 {
		return fmt.Sprint(o.Rank)
	}
	d := o.Model.Width
	desc := func(r int) string {
		if r == 0 {
			return "left out"
		}
		return fmt.Sprint(r)
	}
	attention, mlp := desc(o.rankOf(d, d)), desc(o.rankOf(d, o.Model.MLP))
	if attention == mlp {
		return "automatic: " + attention
	}
	return fmt.Sprintf("automatic (attention %s, MLP %s)", attention, mlp)
}

// Options of a comparison run.
type Options struct {
	Model       transformer.Config
	Steps       int
	Batch       int
	Rank        int     // 0: the wrapper's automatic rank (rankOf); temporal mode its default
	LR          float64 // Adam and AdamW
	SGDLR       float64
	WeightDecay float64 // AdamW
	EvalEvery   int
	EvalBatches int
	WarmUp      int // projector warm-up steps
	CheckEvery  int // projector drift-check interval
	MaxRank     int // adaptive rank: grow up to this (0: fixed rank)
	// TrackingRate is how fast matrix bases follow the gradients after warm-up (0: the
	// default, hooks.DefaultTrackingRate).
	TrackingRate float64
	// Scale is the projected step's scale (hooks.Config.Scale; 0: automatic, √(side/rank));
	// nil keeps the default.
	Scale *float64
	// Complement and ComplementScale are the matrix mode's random complement directions
	// (hooks.Config.Complement; hooks.AutoComplement: automatic, 0: none) and their step's scale;
	// nil keeps the defaults.
	Complement      *int
	ComplementScale *float64
	Seed            int64
	Variants        []string
	Quiet           bool
	OutDir          string // the subspace variants write their drift traces here
}

// Variant names: the stock optimizers, and AdamW wrapped by the projector in each mode.
var allVariants = []string{"adamw", "adam", "sgd", "subspace-temporal", "subspace-matrix"}

// Variants beside allVariants, run when named: GaLore as published (the quality suite's
// reference: full gradient, exact SVD every 200 steps, AdamW on the projection; it needs -rank)
// and matrix mode without its complement (Complement(0): the published method's step with a
// tracked basis), for comparisons at one rank.
const (
	galoreVariant      = "galore"
	plainMatrixVariant = "subspace-matrix-plain"
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
		off := 0
		plain.Complement = &off
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
	opt, err := newOptimizer(variant, o)
	if err != nil {
		return row, nil, err
	}
	store := model.NewStore()
	store.SetParam(model.ParamInitialSeed, o.Seed) // the same initialisation for every variant
	var trainerOpt optimizer.Interface = opt
	var ref *quality.Reference
	var refGradients func(x, y *tensors.Tensor) (map[string]*tensors.Tensor, error)
	if variant == galoreVariant {
		ref = newReference(o)
		trainerOpt = ref
		refGradients = quality.ReferenceGradients(backend, store, o.Model.Logits, ref)
	}
	trainer := train.NewTrainer(backend, store, o.Model.Logits, loss.SparseCategoricalCrossEntropyLogits, trainerOpt, nil, nil)
	// step trains one step; GaLore first refreshes its bases where due, from the same batch.
	refStep := 0
	step := func(x, y *tensors.Tensor) ([]*tensors.Tensor, error) {
		if ref != nil {
			if refStep == 0 { // the reference's first refresh needs the variables: a forward pass creates them
				if _, err := evalLoss(backend, store, o, []batchPair{{tensors.MustCopyFlatData[int32](x), tensors.MustCopyFlatData[int32](y)}}); err != nil {
					return nil, err
				}
			}
			if err := ref.Refresh(store, refStep, func() (map[string]*tensors.Tensor, error) { return refGradients(x, y) }); err != nil {
				return nil, err
			}
			refStep++
		}
		return trainer.TrainStep(train.Batch{Inputs: []*tensors.Tensor{x}, Labels: []*tensors.Tensor{y}})
	}
	batches, err := transformer.NewBatches(corpus.Train, o.Batch, o.Model.SeqLen, uint64(o.Seed))
	if err != nil {
		return row, nil, err
	}
	evalSet, err := evalBatches(corpus.Eval, o)
	if err != nil {
		return row, nil, err
	}
	var bar *progressbar.ProgressBar
	if !o.Quiet {
		bar = progressbar.NewOptions(o.Steps, progressbar.OptionSetWriter(os.Stderr),
			progressbar.OptionSetDescription(fmt.Sprintf("%-18s", variant)), progressbar.OptionShowCount(),
			progressbar.OptionSetWidth(30), progressbar.OptionClearOnFinish())
	}
	var monitor *hooks.Monitor
	if opt != nil && row.Mode != "stock" {
		monitor = opt.NewMonitor(store)
		monitor.Trainer = trainer // lets the rank rule act
		if o.OutDir != "" {
			trace, err := os.Create(filepath.Join(o.OutDir, "trace-"+variant+".jsonl"))
			if err != nil {
				return row, nil, err
			}
			defer trace.Close()
			monitor.Trace = trace
		}
	}
	const untimed = 3 // the first steps compile the graph
	var timed time.Duration
	for i := range o.Steps {
		x, y := batches.Next()
		start := time.Now()
		metrics, err := step(x, y)
		if err != nil {
			return row, nil, fmt.Errorf("%s, step %d: %w", variant, refStep, err)
		}
		elapsed := time.Since(start)
		if i >= untimed {
			timed += elapsed
		}
		lossValue := float64(metrics[0].Value().(float32))
		row.TrainCurve = append(row.TrainCurve, lossValue)
		if monitor != nil {
			if err := monitor.ObserveTimed(elapsed); err != nil {
				return row, nil, err
			}
		}
		if (i+1)%o.EvalEvery == 0 || i+1 == o.Steps {
			ev, err := evalLoss(backend, store, o, evalSet)
			if err != nil {
				return row, nil, err
			}
			row.EvalCurve = append(row.EvalCurve, ev)
			row.EvalCurveSteps = append(row.EvalCurveSteps, i+1)
		}
		if bar != nil {
			desc := fmt.Sprintf("%-18s loss %.3f", variant, lossValue)
			if monitor != nil {
				r := monitor.Last()
				desc += fmt.Sprintf(" rank %s residual %.2f refreshes %d", meanRank(r), r.LastCheckResidual, r.Refreshes)
			}
			bar.Describe(desc)
			_ = bar.Add(1)
		}
	}
	if bar != nil {
		_ = bar.Finish()
	}
	tail := max(1, o.Steps/10)
	for _, l := range row.TrainCurve[o.Steps-tail:] {
		row.TrainLoss += l / float64(tail)
	}
	row.EvalLoss = row.EvalCurve[len(row.EvalCurve)-1]
	row.StepMs = float64(timed.Microseconds()) / 1000 / float64(max(1, o.Steps-untimed))
	row.TokensPerSec = float64(o.Batch*o.Model.SeqLen) / (row.StepMs / 1000)
	if opt != nil { // the reference's graph is not the projector's: its FLOPs are not counted
		flops, err := opt.StepFLOPs()
		if err != nil {
			return row, nil, err
		}
		report, err := opt.Report(store)
		if err != nil {
			return row, nil, err
		}
		gated := float64(flops.Gated(report)) / float64(o.Steps)
		row.GradientFLOPs = float64(flops.Gradient+flops.Optimizer) + gated
		row.StepFLOPs = float64(flops.Step()) + gated
		row.Ops, row.ScalarOps = flops.StepOps(), flops.Ops.Scalar
		row.Refreshes, row.BasesLearned = report.Refreshes, report.SVDs
		row.RankChanges, row.Compilations = report.RankChanges, opt.Builds()
	}
	if monitor != nil {
		row.History = monitor.History
		row.ControllerOverhead = monitor.Times.ControllerOverhead()
		row.WarmUpOverhead = monitor.Times.WarmUpOverhead()
	}
	row.StateBytes = optimizerStateBytes(store)
	if !o.Quiet && opt != nil && row.Mode != "stock" {
		fmt.Fprint(os.Stderr, opt.PlanString())
	}
	timer := func(steps int) (time.Duration, error) {
		var total time.Duration
		for range steps {
			x, y := batches.Next()
			start := time.Now()
			metrics, err := step(x, y)
			if err != nil {
				return 0, err
			}
			_ = metrics[0].Value() // the loss on the host: the step has finished, on any backend
			total += time.Since(start)
		}
		return total, nil
	}
	return row, timer, nil
}

// newReference is GaLore as published on the 12 projections, at -rank, with AdamW's
// hyperparameters: the quality suite's reference (internal/quality), a refresh every 200 steps.
func newReference(o Options) *quality.Reference {
	width := o.Model.Width
	return &quality.Reference{LR: o.LR, Beta1: 0.9, Beta2: 0.999, Epsilon: 1e-7, Scale: 1, Rank: o.Rank, RefreshEvery: 200,
		WeightDecay: o.WeightDecay, Project: regexp.MustCompile(transformer.ProjectionPattern),
		View: func(_ string, dims []int) (int, int) {
			if len(dims) == 3 && dims[0] != width { // attention output: [heads, head_dim, width]
				return dims[0] * dims[1], dims[2]
			}
			n := 1
			for _, d := range dims[1:] {
				n *= d
			}
			return dims[0], n
		}}
}

// optimizerStateBytes sums the variables optimizers keep beside the model: moments, bases,
// snapshots, coefficients (not the scalar counters and learning rates).
func optimizerStateBytes(store *model.Store) int64 {
	var total int64
	for v := range store.IterVariables() {
		if v.Trainable || v.Shape().IsScalar() {
			continue
		}
		p := v.Path()
		if strings.HasPrefix(p, "/"+optimizer.AdamDefaultScope+"/") || strings.HasPrefix(p, "/"+hooks.StateScope+"/") || strings.HasPrefix(p, "/"+quality.ReferenceScope+"/") {
			total += int64(v.Shape().ByteSize())
		}
	}
	return total
}

type batchPair struct{ x, y []int32 }

func evalBatches(data []byte, o Options) ([]batchPair, error) {
	b, err := transformer.NewBatches(data, o.Batch, o.Model.SeqLen, 12345)
	if err != nil {
		return nil, fmt.Errorf("evaluation part: %w", err)
	}
	var out []batchPair
	for range o.EvalBatches {
		x, y := b.Next()
		out = append(out, batchPair{tensors.MustCopyFlatData[int32](x), tensors.MustCopyFlatData[int32](y)})
	}
	return out, nil
}

// evalLoss is the mean next-byte cross-entropy (nats) on the fixed evaluation batches.
//
// It builds its graph at each evaluation: a model.Exec kept across training steps (GoMLX v0.28.16,
// Go backend) returned losses of stale weights (3.68 instead of 3.01 after 200 steps), so the
// evaluation must not outlive the trainer's updates.
func evalLoss(backend compute.Backend, store *model.Store, o Options, set []batchPair) (float64, error) {
	exec, err := model.NewExec(backend, store, func(scope *model.Scope, x, y *graph.Node) *graph.Node {
		logits := o.Model.Logits(scope, x)
		return graph.ReduceAllMean(loss.SparseCategoricalCrossEntropyLogits([]*graph.Node{y}, []*graph.Node{logits}))
	})
	if err != nil {
		return 0, err
	}
	defer exec.Finalize()
	var total float64
	for _, b := range set {
		out, err := exec.Call(tensors.FromFlatDataAndDimensions(b.x, o.Batch, o.Model.SeqLen),
			tensors.FromFlatDataAndDimensions(b.y, o.Batch, o.Model.SeqLen, 1))
		if err != nil {
			return 0, err
		}
		total += float64(out[0].Value().(float32))
	}
	return total / float64(len(set)), nil
}

// AnalyticGradientRatio is the gradient-FLOP ratio the direct path allows at this size: every
// projection's ∂W (2·N·m·n over N tokens) becomes 2·N·r·(m+n) plus the lift 2·r·m·n, while the
// input gradients, the attention products' backward and the head's remain.
func AnalyticGradientRatio(c transformer.Config, batch int, rankOf func(m, n int) int) float64 {
	n := float64(batch * c.SeqLen)
	d, mlp, v := float64(c.Width), float64(c.MLP), float64(c.Vocab)
	type mat struct{ m, n float64 }
	proj := []mat{{d, d}, {d, d}, {d, d}, {d, d}, {d, mlp}, {mlp, d}}
	attentionBackward := 8 * float64(batch) * float64(c.SeqLen) * float64(c.SeqLen) * d // ∂ of QKᵀ and AV
	var stock, sub float64
	for range c.Depth {
		for _, p := range proj {
			dW, dx := 2*n*p.m*p.n, 2*n*p.m*p.n
			stock += dW + dx
			r := float64(rankOf(int(p.m), int(p.n)))
			if r == 0 { // left out: its ∂W stays
				sub += dW + dx
				continue
			}
			sub += dx + 2*n*r*(p.m+p.n) + 2*r*p.m*p.n
		}
		stock += attentionBackward
		sub += attentionBackward
	}
	head := 2 * (2 * n * d * v) // its ∂W and ∂x
	return (sub + head) / (stock + head)
}

func main() {
	def := transformer.DefaultConfig()
	var (
		steps    = flag.Int("steps", 200, "training steps per variant")
		batch    = flag.Int("batch", 8, "sequences per batch")
		width    = flag.Int("width", def.Width, "model width")
		depth    = flag.Int("depth", def.Depth, "transformer blocks")
		heads    = flag.Int("heads", def.Heads, "attention heads")
		mlp      = flag.Int("mlp", def.MLP, "feed-forward hidden width")
		seq      = flag.Int("seq", def.SeqLen, "sequence length (bytes)")
		rank     = flag.Int("rank", 0, "subspace rank of the 12 projections (0: the one option alone, the wrapper's automatic rank and selection: 16 on the same 12, with 32 complement directions)")
		ranks    = flag.String("ranks", "", "a comma-separated list of ranks to run in turn instead of -rank (stock variants train once), then draw the frontier of eval loss against step time (frontier.png, frontier.md)")
		widths   = flag.String("widths", "", "a comma-separated list of model widths to run in turn (MLP 4×, a head per 64), AdamW against the one option and against rank width/16, then draw cost against width (scaling.png, scaling.md)")
		warmUp   = flag.Int("warmup", 4, "projector warm-up steps (matrix: steps of fast tracking at the start and per refresh)")
		check    = flag.Int("check-every", hooks.DefaultCheckEvery, "projector drift-check interval")
		maxRank  = flag.Int("max-rank", 0, "adaptive rank: let the matrix subspace's rank grow up to this (0: fixed at -rank)")
		tracking = flag.Float64("tracking-rate", hooks.DefaultTrackingRate, "how fast matrix bases follow the gradients after warm-up (0 keeps them fixed between refreshes)")
		lr       = flag.Float64("lr", 2e-3, "Adam and AdamW learning rate")
		scale    = flag.Float64("scale", 1, "the projected step's scale (hooks.Config.Scale; 0: automatic, √(side/rank))")
		compl    = flag.Int("complement", hooks.AutoComplement, "matrix mode's random complement directions per matrix (hooks.Config.Complement; -1: automatic, 0: none, the published method's step)")
		complSc  = flag.Float64("complement-scale", hooks.DefaultComplementScale, "their step against the tracked directions' (hooks.Config.ComplementScale)")
		sgdLR    = flag.Float64("sgd-lr", 0.3, "SGD learning rate")
		corpus   = flag.String("corpus", "", "comma-separated text files or directories (default: $(go env GOROOT)/src, .go files)")
		maxBytes = flag.Int("max-bytes", 8<<20, "read at most this many corpus bytes")
		variants = flag.String("variants", strings.Join(allVariants, ","), "comma-separated variants to compare")
		out      = flag.String("out", "transformer-report", "directory for loss.png and report.md")
		jsonPath = flag.String("json", "", "also write the rows as JSON lines to this file")
		backendF = flag.String("backend", "", `backend: "go" (default), "xla:cpu", "xla:cuda"; default $GOMLX_BACKEND`)
		quiet    = flag.Bool("q", false, "no progress bars")
	)
	flag.Parse()
	o := Options{
		Model: transformer.Config{Vocab: 256, Width: *width, Depth: *depth, Heads: *heads, MLP: *mlp, SeqLen: *seq},
		Steps: *steps, Batch: *batch, Rank: *rank, LR: *lr, SGDLR: *sgdLR, WeightDecay: 0.01,
		EvalEvery: max(1, *steps/10), EvalBatches: 8, WarmUp: *warmUp, CheckEvery: *check, MaxRank: *maxRank, TrackingRate: *tracking, Scale: scale, Complement: compl, ComplementScale: complSc, Seed: 1, Variants: strings.Split(*variants, ","), Quiet: *quiet,
	}
	if *widths != "" {
		widthList, err := parseWidths(*widths)
		if err != nil {
			fmt.Fprintln(os.Stderr, "transformer:", err)
			os.Exit(2)
		}
		if err := runScaling(o, widthList, *corpus, *maxBytes, *out, *backendF); err != nil {
			fmt.Fprintln(os.Stderr, "transformer:", err)
			os.Exit(1)
		}
		return
	}
	rankList, err := figures.ParseRanks(*ranks, *rank, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "transformer:", err)
		os.Exit(2)
	}
	if err := run(o, rankList, *corpus, *maxBytes, *out, *jsonPath, *backendF); err != nil {
		fmt.Fprintln(os.Stderr, "transformer:", err)
		os.Exit(1)
	}
}

// rankDependent says whether a variant's run depends on the rank (the stock ones train once).
func rankDependent(variant string) bool {
	return strings.HasPrefix(variant, "subspace-") || variant == galoreVariant
}

func run(o Options, ranks []int, corpusFlag string, maxBytes int, outDir, jsonPath, backendFlag string) error {
	_, err := runRanks(o, ranks, corpusFlag, maxBytes, outDir, jsonPath, backendFlag)
	return err
}

// runRanks is run, returning each rank's rows (AdamW's and the stock variants' among them,
// timed in turns with that rank's).
func runRanks(o Options, ranks []int, corpusFlag string, maxBytes int, outDir, jsonPath, backendFlag string) ([][]Row, error) {
	if err := o.Model.Validate(); err != nil {
		return nil, err
	}
	if o.Steps < 1 || o.Batch < 1 || slices.Min(ranks) < 0 {
		return nil, fmt.Errorf("-steps %d and -batch %d must be ≥ 1, -rank %v ≥ 0", o.Steps, o.Batch, ranks)
	}
	for _, r := range ranks {
		at := o
		at.Rank = r
		for _, v := range o.Variants {
			if _, err := newOptimizer(v, at); err != nil {
				return nil, err
			}
		}
	}
	backend, err := backends.New(backends.Config(backendFlag))
	if err != nil {
		return nil, err
	}
	roots, exts := []string{transformer.GoSource(transformer.GoRoot())}, []string{".go"}
	if corpusFlag != "" {
		roots, exts = strings.Split(corpusFlag, ","), nil
	}
	corpus, err := transformer.LoadCorpus(roots, exts, maxBytes)
	if err != nil {
		return nil, err
	}
	unigram := transformer.UnigramEntropy(corpus.Train)
	fmt.Fprintf(os.Stderr, "machine: %s\n", backends.Machine())
	fmt.Fprintf(os.Stderr, "backend %s (%s); corpus %d files (%d eval), %.1f MB train, %.1f MB eval; unigram entropy %.3f nats/byte\n",
		backend.Name(), backends.Resolve(backends.Config(backendFlag)), corpus.Files, corpus.EvalFiles, float64(len(corpus.Train))/1e6, float64(len(corpus.Eval))/1e6, unigram)
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, err
	}
	// The stock variants train once; each rank's variants are timed in turns with them.
	var stockRows []Row
	var stockTimers []stepTimer
	for _, v := range o.Variants {
		if rankDependent(v) {
			continue
		}
		row, timer, err := runVariant(backend, corpus, v, o)
		if err != nil {
			return nil, err
		}
		stockRows, stockTimers = append(stockRows, row), append(stockTimers, timer)
	}
	var allRows []Row
	var byRank [][]Row
	frontier := figures.Frontier{Title: fmt.Sprintf("Transformer (width %d, %d steps): quality against step time, by rank", o.Model.Width, o.Steps)}
	for _, r := range ranks {
		at := o
		at.Rank = r
		dir := outDir
		if len(ranks) > 1 {
			dir = filepath.Join(outDir, fmt.Sprintf("rank-%d", r))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, err
			}
			fmt.Printf("\n## Rank %s\n\n", at.rankDesc())
		}
		at.OutDir = dir
		rows, timers := slices.Clone(stockRows), slices.Clone(stockTimers)
		for _, v := range o.Variants {
			if !rankDependent(v) {
				continue
			}
			row, timer, err := runVariant(backend, corpus, v, at)
			if err != nil {
				return nil, err
			}
			rows, timers = append(rows, row), append(timers, timer)
		}
		if err := timeInterleaved(rows, timers, o.Quiet); err != nil {
			return nil, err
		}
		if err := writeRankReport(at, dir, rows, corpus, unigram); err != nil {
			return nil, err
		}
		addToFrontier(&frontier, r, rows)
		allRows = append(allRows, rows...)
		byRank = append(byRank, rows)
	}
	if len(ranks) > 1 && len(frontier.Series) > 0 {
		table := frontier.Table()
		fmt.Printf("\n## Frontier: eval loss and step time against AdamW's, by rank\n\n%s", table)
		if err := plots.Frontier(filepath.Join(outDir, "frontier.png"), frontier); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(outDir, "frontier.md"), []byte(table), 0o644); err != nil {
			return nil, err
		}
		if err := frontier.Write(filepath.Join(outDir, "frontier.json")); err != nil {
			return nil, err
		}
		fmt.Fprintf(os.Stderr, "wrote frontier.png, .md and .json in %s\n", outDir)
	}
	if jsonPath != "" {
		f, err := os.Create(jsonPath)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		enc := json.NewEncoder(f)
		for _, r := range allRows {
			if err := enc.Encode(r); err != nil {
				return nil, err
			}
		}
	}
	return byRank, nil
}

// runScaling runs the model at each width (depth as set, MLP 4× the width, a head per 64, at
// least one): AdamW, the one option (-rank 0) and rank width/16 on the 12 projections, each
// timed in turns with AdamW, and writes each width's report under width-W/ and the cost against
// width: scaling.png, scaling.md and scaling.json.
func runScaling(o Options, widths []int, corpusFlag string, maxBytes int, outDir, backendFlag string) error {
	o.Variants = []string{"adamw", "subspace-matrix"}
	fig := figures.Scaling{Title: fmt.Sprintf("Transformer (depth %d, batch %d×%d): cost against width", o.Model.Depth, o.Batch, o.Model.SeqLen)}
	for _, w := range widths {
		at := o
		at.Model.Width, at.Model.MLP, at.Model.Heads = w, 4*w, max(1, w/64)
		ranks := []int{0, max(1, w/16)}
		dir := filepath.Join(outDir, fmt.Sprintf("width-%d", w))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		fmt.Printf("\n# Width %d\n", w)
		byRank, err := runRanks(at, ranks, corpusFlag, maxBytes, dir, "", backendFlag)
		if err != nil {
			return fmt.Errorf("width %d: %w", w, err)
		}
		for i, rows := range byRank {
			ranked := at
			ranked.Rank = ranks[i]
			series := "rank width/16"
			if ranks[i] == 0 {
				series = "one option"
			}
			if p, ok := scalingPoint(w, series, ranked.rankDesc(), rows); ok {
				fig.Points = append(fig.Points, p)
			}
		}
	}
	table := fig.Table()
	fmt.Printf("\n## Cost against width (ratios to AdamW's in the same run)\n\n%s", table)
	if err := os.WriteFile(filepath.Join(outDir, "scaling.md"), []byte(table), 0o644); err != nil {
		return err
	}
	if err := fig.Write(filepath.Join(outDir, "scaling.json")); err != nil {
		return err
	}
	if err := plots.Scaling(filepath.Join(outDir, "scaling.png"), fig); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote scaling.png, .md and .json in %s\n", outDir)
	return nil
}

// parseWidths reads -widths: model widths ≥ 16 (rank width/16 is then at least 1).
func parseWidths(list string) ([]int, error) {
	var widths []int
	for _, field := range strings.Split(list, ",") {
		w, err := strconv.Atoi(strings.TrimSpace(field))
		if err != nil || w < 16 {
			return nil, fmt.Errorf("-widths %q: %q is not a width ≥ 16", list, field)
		}
		widths = append(widths, w)
	}
	return widths, nil
}

// scalingPoint is the projected variant's row of one width and rank against AdamW's of the same
// run.
func scalingPoint(width int, series, rank string, rows []Row) (figures.ScalingPoint, bool) {
	i := slices.IndexFunc(rows, func(r Row) bool { return r.Variant == "adamw" })
	j := slices.IndexFunc(rows, func(r Row) bool { return r.Variant == "subspace-matrix" })
	if i < 0 || j < 0 || rows[i].StepMs == 0 || rows[i].GradientFLOPs == 0 {
		return figures.ScalingPoint{}, false
	}
	ref, r := rows[i], rows[j]
	return figures.ScalingPoint{Width: width, Series: series, Rank: rank,
		StepRatio: r.StepMs / ref.StepMs, GradientRatio: r.GradientFLOPs / ref.GradientFLOPs,
		Ops: r.Ops, ScalarOps: r.ScalarOps, StockOps: ref.Ops, StateBytes: r.StateBytes, StockState: ref.StateBytes}, true
}

// addToFrontier adds each non-stock row of one rank's run as a point: its eval loss and step
// time against AdamW's of the same run.
func addToFrontier(f *figures.Frontier, rank int, rows []Row) {
	i := slices.IndexFunc(rows, func(r Row) bool { return r.Variant == "adamw" })
	if i < 0 {
		return
	}
	ref := rows[i]
	for _, r := range rows {
		if r.Mode == "stock" || ref.StepMs == 0 || ref.EvalLoss == 0 {
			continue
		}
		f.Add(r.Variant, figures.FrontierPoint{Rank: rank, StepRatio: r.StepMs / ref.StepMs, LossRatio: r.EvalLoss / ref.EvalLoss})
	}
}

// writeRankReport prints one rank's table and writes its pictures and report in dir.
func writeRankReport(o Options, dir string, rows []Row, corpus *transformer.Corpus, unigram float64) error {
	bound := AnalyticGradientRatio(o.Model, o.Batch, o.rankOf)
	table := formatTable(rows, bound)
	fmt.Print(table)
	if err := plotLosses(filepath.Join(dir, "loss.png"), rows); err != nil {
		return err
	}
	var series []figures.Series
	for _, r := range rows {
		if r.Mode != "stock" && r.Mode != "galore" {
			series = append(series, figures.Series{Name: r.Variant, Loss: r.TrainCurve, History: r.History})
		}
	}
	if len(series) > 0 {
		fig := figures.Controller{Title: "Drift controller: loss, residual at checks, rank", Threshold: hooks.DefaultResidualThreshold, Series: series}
		if err := plots.Controller(filepath.Join(dir, "controller.png"), fig); err != nil {
			return err
		}
	}
	if err := writeReport(filepath.Join(dir, "report.md"), o, corpus, unigram, table); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote loss.png, controller.png, report.md and the subspace variants' trace-*.jsonl in %s\n", dir)
	return nil
}

// formatTable renders the rows as a markdown table with ratios against stock AdamW.
func formatTable(rows []Row, bound float64) string {
	var ref *Row
	for i := range rows {
		if rows[i].Variant == "adamw" {
			ref = &rows[i]
		}
	}
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 1, ' ', 0)
	fmt.Fprintln(tw, "| variant\t| train loss\t| eval loss\t| ms/step\t| tokens/s\t| gradient FLOPs/step\t| step FLOPs/step\t| ops/step (scalar)\t| optimizer state\t| bases learned (refreshes)\t| controller time\t| compilations\t|")
	fmt.Fprintln(tw, "|---\t|---\t|---\t|---\t|---\t|---\t|---\t|---\t|---\t|---\t|---\t|---\t|")
	for _, r := range rows {
		rel := func(x, base float64) string {
			if ref == nil || base == 0 {
				return ""
			}
			return fmt.Sprintf(" (%.2f)", x/base)
		}
		var refEval, refMs, refGrad, refStep float64
		if ref != nil {
			refEval, refMs, refGrad, refStep = ref.EvalLoss, ref.StepMs, ref.GradientFLOPs, ref.StepFLOPs
		}
		controller := "—"
		if r.Mode != "stock" && r.Mode != "galore" {
			controller = fmt.Sprintf("%.1f%% (+%.1f%% warm-up)", 100*r.ControllerOverhead, 100*r.WarmUpOverhead)
		}
		stepRatio := rel(r.StepMs, refMs)
		if r.BlockRatioMax > 0 && stepRatio != "" {
			stepRatio = fmt.Sprintf(" (%.2f; blocks %.2f–%.2f)", r.StepMs/refMs, r.BlockRatioMin, r.BlockRatioMax)
		}
		gradFLOPs := hooks.HumanFLOPs(int64(r.GradientFLOPs)) + rel(r.GradientFLOPs, refGrad)
		stepFLOPs := hooks.HumanFLOPs(int64(r.StepFLOPs)) + rel(r.StepFLOPs, refStep)
		ops, learned, compilations := fmt.Sprintf("%d (%d)", r.Ops, r.ScalarOps), fmt.Sprintf("%d (%d)", r.BasesLearned, r.Refreshes), fmt.Sprint(r.Compilations)
		if r.Mode == "galore" { // the reference's graph is not counted (it runs every stock product and more)
			gradFLOPs, stepFLOPs, ops, learned, compilations, controller = "—", "—", "—", "SVD every 200 steps", "—", "—"
		}
		fmt.Fprintf(tw, "| %s\t| %.3f\t| %.3f%s\t| %.1f%s\t| %.0f\t| %s\t| %s\t| %s\t| %s\t| %s\t| %s\t| %s\t|\n",
			r.Variant, r.TrainLoss, r.EvalLoss, rel(r.EvalLoss, refEval), r.StepMs, stepRatio, r.TokensPerSec,
			gradFLOPs, stepFLOPs, ops, humanize.Bytes(r.StateBytes), learned, controller, compilations)
	}
	_ = tw.Flush()
	fmt.Fprintf(&b, "\nRatios in parentheses are against stock AdamW. Analytic bound of the gradient-FLOP ratio for the matrix\n"+
		"subspace at this size (projections' ∂W replaced; input gradients, attention and head kept): %.2f.\n"+
		"ms/step: measured after training, the variants taking turns (5 blocks of 10 steps each); \"blocks\"\n"+
		"gives the smallest and largest of the blocks' ratios to AdamW's, the machine's noise. ops/step: the ops\n"+
		"an ordinary step executes (of them, single values), each a fixed cost beyond its arithmetic.\n"+
		"Controller time: the share of the wall time that drift checks and refreshes after warm-up took beyond\n"+
		"a plain step (and, in parentheses, the warm-up's learning). Compilations: step graphs built (the\n"+
		"first, plus one per rank change).\n", bound)
	return b.String()
}

func writeReport(path string, o Options, corpus *transformer.Corpus, unigram float64, table string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w := io.Writer(f)
	fmt.Fprintf(w, "# Transformer: stock optimizers against the gradient-subspace projector\n\n")
	fmt.Fprintf(w, "Model: width %d, %d blocks, %d heads, MLP %d, sequence %d bytes. Batch %d, %d steps, matrix rank %s (warm-up %d, drift check every %d), AdamW lr %g (decay %g), SGD lr %g.\n\n",
		o.Model.Width, o.Model.Depth, o.Model.Heads, o.Model.MLP, o.Model.SeqLen, o.Batch, o.Steps, o.rankDesc(), o.WarmUp, o.CheckEvery, o.LR, o.WeightDecay, o.SGDLR)
	fmt.Fprintf(w, "Corpus: %d files (%d for evaluation), %.1f MB; unigram entropy %.3f nats/byte (%.2f bits). Train loss is the mean batch loss over the last tenth of the steps; eval loss is on %d fixed held-out batches.\n\n",
		corpus.Files, corpus.EvalFiles, float64(len(corpus.Train)+len(corpus.Eval))/1e6, unigram, unigram/math.Ln2, o.EvalBatches)
	fmt.Fprintf(w, "%s\n![loss curves](loss.png)\n\n", table)
	fmt.Fprintf(w, "The drift controller of the subspace variants: loss, the largest relative residual of the control\n"+
		"gradient at each check (refreshes marked ×) and the mean rank. Every signal and decision is in\n"+
		"trace-<variant>.jsonl.\n\n![controller](controller.png)\n")
	return nil
}

// meanRank formats the mean rank of the projected variables ("8", "12.5").
func meanRank(r hooks.Report) string {
	if len(r.Variables) == 0 {
		return "-"
	}
	var sum float64
	for _, v := range r.Variables {
		sum += float64(v.Rank)
	}
	return strconv.FormatFloat(sum/float64(len(r.Variables)), 'f', -1, 64)
}

// Interleaved timing: after training, each variant runs timingBlocks blocks of timingSteps more
// steps, the variants taking turns, so that a change in the machine's load (these machines are
// shared) falls on all of them alike. Variants trained one after the other can differ by 15%
// from that alone.
const timingBlocks, timingSteps = 5, 10 // 50 steps: one drift check at the default interval

func timeInterleaved(rows []Row, timers []stepTimer, quiet bool) error {
	if len(rows) < 2 {
		return nil
	}
	if !quiet {
		fmt.Fprintf(os.Stderr, "timing: %d interleaved blocks of %d steps per variant\n", timingBlocks, timingSteps)
	}
	ref := slices.IndexFunc(rows, func(r Row) bool { return r.Variant == "adamw" })
	totals := make([]time.Duration, len(rows))
	for range timingBlocks {
		block := make([]time.Duration, len(rows))
		for i, timer := range timers {
			d, err := timer(timingSteps)
			if err != nil {
				return fmt.Errorf("timing %s: %w", rows[i].Variant, err)
			}
			totals[i] += d
			block[i] = d
		}
		for i := range rows {
			if ref < 0 || i == ref {
				continue
			}
			ratio := float64(block[i]) / float64(block[ref])
			if rows[i].BlockRatioMin == 0 || ratio < rows[i].BlockRatioMin {
				rows[i].BlockRatioMin = ratio
			}
			rows[i].BlockRatioMax = max(rows[i].BlockRatioMax, ratio)
		}
	}
	for i := range rows {
		rows[i].StepMs = float64(totals[i].Microseconds()) / 1000 / float64(timingBlocks*timingSteps)
		rows[i].TokensPerSec = float64(rows[i].Batch*rows[i].SeqLen) / (rows[i].StepMs / 1000)
	}
	return nil
}
