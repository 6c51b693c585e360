// Command bench measures what the matrix subspace saves on MLP training steps: step time (stock
// and subspace timed in interleaved blocks in the same process, so machine noise hits both), the
// gradient FLOPs counted from the compiled step graphs next to the analytic bound, and the
// optimizer-state bytes of the projected variables.
//
//	GOTOOLCHAIN=auto GOEXPERIMENT=simd go run ./examples/bench
//	GOTOOLCHAIN=auto GOEXPERIMENT=simd go run ./examples/bench -config wide -blocks 5
//	GOTOOLCHAIN=auto GOEXPERIMENT=simd go run ./examples/bench -config wide -rank 0 -batch 128   # the one option alone
//	GOTOOLCHAIN=auto GOEXPERIMENT=simd go run ./examples/bench -config mnist -feed host   # batches built from Go slices
//
// Configurations: "mnist" is a 784-256-10 MLP, batch 256, Adam, first layer projected at rank 8;
// "wide" is a 1024-wide MLP with 4 hidden layers, every dense layer projected at rank 8.
// Batches are gathered on the device by dataset.InMemory, as GoMLX programs feed training.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"iter"
	mathrand "math/rand"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/support/humanize"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/dataset"
	"github.com/gomlx/gomlx/ml/layers"
	"github.com/gomlx/gomlx/ml/layers/activation"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/train"
	"github.com/gomlx/gomlx/ml/train/loss"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gradsub/gradsub/hooks"
	"github.com/gradsub/gradsub/internal/backends"
)

// Config is one benchmark: an MLP and which of its layers are projected.
type Config struct {
	Name      string
	Input     int
	Hidden    []int
	Classes   int
	Batch     int
	Rank      int
	Projected []string // variable paths; nil: the default selection (every dense layer)
	// Complement is the projected variant's number of complement directions per matrix
	// (hooks.Config.Complement; hooks.AutoComplement, the default: twice the rank; 0: none).
	Complement int
}

var configs = []Config{
	{Name: "mnist", Input: 784, Hidden: []int{256}, Classes: 10, Batch: 256, Rank: 8,
		Projected: []string{"/layer_0/dense/weights"}, Complement: hooks.AutoComplement},
	{Name: "wide", Input: 1024, Hidden: []int{1024, 1024, 1024, 1024}, Classes: 10, Batch: 256, Rank: 8, Complement: hooks.AutoComplement},
}

func (c Config) model(scope *model.Scope, x *Node) *Node {
	for i, width := range c.Hidden {
		x = layers.DenseWithBias(scope.In("layer_%d", i), x, width)
		x = activation.Apply(activation.TypeRelu, x)
	}
	return layers.DenseWithBias(scope.In("logits"), x, c.Classes)
}

// Result is one configuration's measurements; ratios are subspace / stock.
type Result struct {
	Config              string  `json:"config"`
	Backend             string  `json:"backend"`
	Feed                string  `json:"feed"` // how batches reach the step: "device" or "host"
	StockStepMs         float64 `json:"stock_step_ms"`
	SubspaceStepMs      float64 `json:"subspace_step_ms"`
	StepTimeRatio       float64 `json:"step_time_ratio"`
	BlockRatioMin       float64 `json:"block_ratio_min"`    // the ratio of each interleaved block:
	BlockRatioMedian    float64 `json:"block_ratio_median"` // its spread is the machine's noise
	BlockRatioMax       float64 `json:"block_ratio_max"`
	StockGradientFLOPs  int64   `json:"stock_gradient_flops"`
	SubspaceGradFLOPs   int64   `json:"subspace_gradient_flops"`
	ProjectedGradRatio  float64 `json:"projected_layers_gradient_flops_ratio"`
	StepFLOPsRatio      float64 `json:"step_flops_ratio"`
	AnalyticFLOPsRatio  float64 `json:"analytic_step_flops_ratio"`
	StockStateBytes     int64   `json:"stock_state_bytes"`
	SubspaceStateBytes  int64   `json:"subspace_state_bytes"`
	StateBytesRatio     float64 `json:"state_bytes_ratio"`
	FloorStepMs         float64 `json:"floor_step_ms"`       // the projected layers frozen: no weight gradient at all
	FloorRatio          float64 `json:"floor_ratio"`         // floor / stock: what no ∂W at all would give
	StockOps            int     `json:"stock_ops"`           // ops an ordinary step executes
	SubspaceOps         int     `json:"subspace_ops"`        // the same with the projector
	ProjectorOpsPerStep int     `json:"projector_ops"`       // subspace − stock`
	StockScalarOps      int     `json:"stock_scalar_ops"`    // of them, ops with a single-value output
	SubspaceScalarOps   int     `json:"subspace_scalar_ops"` // (dispatch cost, no arithmetic)
	ProjectedVariables  int     `json:"projected_variables"`
	DirectPathVariables int     `json:"direct_path_variables"`
}

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

func (c Config) isProjected(v *model.Variable) bool {
	if c.Projected != nil {
		return slices.Contains(c.Projected, v.Path())
	}
	if c.Rank == 0 && v.Shape().Rank() == 2 { // the automatic rank may leave a layer out
		return hooks.DefaultSelection(v) && c.rankOf(v.Shape().Dim(0), v.Shape().Dim(1)) > 0
	}
	return hooks.DefaultSelection(v)
}

// rankOf is a dense layer [m, n]'s rank: the config's, or with Rank 0 the wrapper's automatic
// rank at the config's batch (0: left out).
func (c Config) rankOf(m, n int) int {
	if c.Rank > 0 {
		return c.Rank
	}
	if c.Complement == 0 {
		return hooks.PlainAutoRank(m, n, c.Batch)
	}
	return hooks.AutoRank(m, n, c.Batch)
}

// Feeds: how batches reach the step. "device" is how GoMLX programs feed training: the
// examples live on the device (dataset.InMemory) and each batch is gathered there. "host" builds
// each batch from Go slices; on the Go backend that costs every step a freshly allocated buffer
// the size of the batch and more garbage collections (docs/backends.md), which slowed stock's
// MLP steps more than the projected ones: it flatters the ratio.
const (
	feedDevice = "device"
	feedHost   = "host"
)

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

// analyticRatio is the step-FLOP ratio the direct path allows for a chain of dense layers:
// forward and ∂x are unchanged; each projected ∂W (2·B·m·n) becomes 2·B·r·(m+n), plus the lift
// 2·r·m·n; gated work is left out.
func analyticRatio(c Config) float64 {
	dims := append(append([]int{c.Input}, c.Hidden...), c.Classes)
	b := float64(c.Batch)
	var stock, sub float64
	for i := 0; i+1 < len(dims); i++ {
		m, n := float64(dims[i]), float64(dims[i+1])
		forward, dW, dx := 2*b*m*n, 2*b*m*n, 2*b*m*n
		if i == 0 {
			dx = 0 // nothing needs the input's gradient
		}
		stock += forward + dW + dx
		r := float64(c.rankOf(dims[i], dims[i+1]))
		projected := (c.Projected == nil || i == 0) && r > 0
		if projected {
			sub += forward + dx + 2*b*r*(m+n) + 2*r*m*n
		} else {
			sub += forward + dW + dx
		}
	}
	return sub / stock
}

func run(backend compute.Backend, c Config, feed string, blocks, blockSteps int, logf func(string, ...any)) (Result, error) {
	res := Result{Config: c.Name, Backend: backend.Name(), Feed: feed}
	stock := newVariant(backend, c, false, false)
	sub := newVariant(backend, c, true, false)
	frozen := newVariant(backend, c, false, true)
	next, stop, err := newFeeder(backend, c, feed, rand.New(rand.NewPCG(1, 2)))
	if err != nil {
		return res, err
	}
	defer stop()
	// Compile and warm up both (the subspace variant past its warm-up phase).
	warm := sub.opt.Config().WarmUpSteps() + 5
	for _, v := range []*variant{stock, sub} {
		if _, err := v.steps(next, warm); err != nil {
			return res, err
		}
	}
	if _, err := frozen.steps(next, 1); err != nil { // for its FLOPs only
		return res, err
	}
	logf("%s: %s", c.Name, strings.TrimSpace(sub.opt.PlanString()))
	// Interleaved blocks, in rotating order: the machine's drift falls on every variant alike.
	times := map[*variant]time.Duration{}
	var ratios []float64
	for i := range blocks {
		order := []*variant{stock, sub}
		if i%2 == 1 {
			order = []*variant{sub, stock}
		}
		block := map[*variant]time.Duration{}
		for _, v := range order {
			d, err := v.steps(next, blockSteps)
			if err != nil {
				return res, err
			}
			times[v] += d
			block[v] = d
		}
		ratios = append(ratios, float64(block[sub])/float64(block[stock]))
		logf("%s: block %d of %d: stock %.2f ms/step, subspace %.2f ms/step", c.Name, i+1, blocks,
			msPerStep(times[stock], (i+1)*blockSteps), msPerStep(times[sub], (i+1)*blockSteps))
	}
	n := blocks * blockSteps
	res.StockStepMs, res.SubspaceStepMs = msPerStep(times[stock], n), msPerStep(times[sub], n)
	res.StepTimeRatio = res.SubspaceStepMs / res.StockStepMs
	res.BlockRatioMin, res.BlockRatioMedian, res.BlockRatioMax = spread(ratios)

	fs, err := stock.opt.StepFLOPs()
	if err != nil {
		return res, err
	}
	fp, err := sub.opt.StepFLOPs()
	if err != nil {
		return res, err
	}
	ff, err := frozen.opt.StepFLOPs()
	if err != nil {
		return res, err
	}
	res.StockGradientFLOPs, res.SubspaceGradFLOPs = fs.Gradient, fp.Gradient
	res.StockOps, res.SubspaceOps = fs.StepOps(), fp.StepOps()
	res.ProjectorOpsPerStep = res.SubspaceOps - res.StockOps
	res.StockScalarOps, res.SubspaceScalarOps = fs.Ops.Scalar, fp.Ops.Scalar
	// The projected layers' share: total gradient FLOPs less the other layers' (the frozen run).
	res.ProjectedGradRatio = 1 // nothing projected (the automatic rank may leave every layer out)
	if fs.Gradient > ff.Gradient {
		res.ProjectedGradRatio = float64(fp.Gradient-ff.Gradient) / float64(fs.Gradient-ff.Gradient)
	}
	report, err := sub.opt.Report(sub.store)
	if err != nil {
		return res, err
	}
	gatedPerStep := 0.0 // nothing projected: the projector keeps no step count
	if report.Steps > 0 {
		gatedPerStep = float64(fp.Gated(report)) / float64(report.Steps)
	}
	res.StepFLOPsRatio = (float64(fp.Step()) + gatedPerStep) / float64(fs.Step())
	res.AnalyticFLOPsRatio = analyticRatio(c)
	res.StockStateBytes, res.SubspaceStateBytes = stateBytes(stock.store, c), stateBytes(sub.store, c)
	res.StateBytesRatio = 1
	if res.StockStateBytes > 0 {
		res.StateBytesRatio = float64(res.SubspaceStateBytes) / float64(res.StockStateBytes)
	}
	for _, e := range sub.opt.Plan() {
		if e.Route != hooks.RouteFull {
			res.ProjectedVariables++
		}
		if e.Route == hooks.RouteDirect {
			res.DirectPathVariables++
		}
	}
	return res, nil
}

// spread returns the smallest, median and largest of values (not empty).
func spread(values []float64) (lo, median, hi float64) {
	sorted := slices.Sorted(slices.Values(values))
	n := len(sorted)
	median = sorted[n/2]
	if n%2 == 0 {
		median = (sorted[n/2-1] + sorted[n/2]) / 2
	}
	return sorted[0], median, sorted[n-1]
}

func msPerStep(d time.Duration, steps int) float64 {
	return float64(d.Microseconds()) / 1000 / float64(steps)
}

func main() {
	flagConfig := flag.String("config", "all", "benchmark: all, mnist (784-256-10, first layer at rank 8), wide (1024-wide, 4 hidden layers, all projected)")
	flagBlocks := flag.Int("blocks", 6, "interleaved timing blocks per variant")
	flagSteps := flag.Int("steps", 25, "steps per timing block")
	flagBackend := flag.String("backend", "", `backend: "go" (default), "xla:cpu", "xla:cuda"; default $GOMLX_BACKEND`)
	flagJSON := flag.String("json", "", "also write the results as JSON lines to this file")
	flagRank := flag.Int("rank", -1, "rank of every config's projected layers (0: the wrapper's automatic rank on the default selection; -1: each config's own, 8)")
	flagBatch := flag.Int("batch", 0, "batch of every config (0: each config's own, 256)")
	flagComplement := flag.Int("complement", hooks.AutoComplement, "complement directions per projected matrix (hooks.Config.Complement; -1: automatic, twice the rank; 0: none, the published method's step)")
	flagFeed := flag.String("feed", feedDevice, `how batches reach the step: "device" (gathered on the device by dataset.InMemory, as GoMLX programs feed) or "host" (built from Go slices every step)`)
	flag.Parse()
	backend, err := backends.New(backends.Config(*flagBackend))
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
	var results []Result
	for _, c := range configs {
		if *flagConfig != "all" && *flagConfig != c.Name {
			continue
		}
		if *flagRank >= 0 {
			c.Rank = *flagRank
			if *flagRank == 0 {
				c.Projected = nil // the one option alone
			}
		}
		if *flagBatch > 0 {
			c.Batch = *flagBatch
		}
		c.Complement = *flagComplement
		r, err := run(backend, c, *flagFeed, *flagBlocks, *flagSteps, logf)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		results = append(results, r)
	}
	if len(results) == 0 {
		fmt.Fprintf(os.Stderr, "bench: unknown -config %q (use all, mnist or wide)\n", *flagConfig)
		os.Exit(1)
	}
	fmt.Printf("backend: %s (%s)\nmachine: %s\nfeed: %s\n\n", results[0].Backend, backends.Resolve(backends.Config(*flagBackend)),
		backends.Machine(), results[0].Feed)
	fmt.Println("| config | stock ms/step | subspace ms/step | step time ratio (blocks: min–max) | projected layers' gradient FLOPs ratio | step FLOPs ratio (analytic bound) | optimizer state of projected vars | ops per step: stock → subspace (scalar) |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	for _, r := range results {
		fmt.Printf("| %s | %.2f | %.2f | **%.2f** (%.2f–%.2f) | %.3f | %.2f (%.2f) | %s → %s (%.3f) | %d → %d (+%d; scalar %d → %d) |\n",
			r.Config, r.StockStepMs, r.SubspaceStepMs, r.StepTimeRatio, r.BlockRatioMin, r.BlockRatioMax, r.ProjectedGradRatio,
			r.StepFLOPsRatio, r.AnalyticFLOPsRatio, humanize.Bytes(r.StockStateBytes), humanize.Bytes(r.SubspaceStateBytes),
			r.StateBytesRatio, r.StockOps, r.SubspaceOps, r.ProjectorOpsPerStep, r.StockScalarOps, r.SubspaceScalarOps)
	}
	if *flagJSON != "" {
		f, err := os.Create(*flagJSON)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		defer f.Close()
		enc := json.NewEncoder(f)
		for _, r := range results {
			_ = enc.Encode(r)
		}
	}
}
