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
	"flag"
	"fmt"
	"os"
	"slices"

	"github.com/gomlx/compute/support/humanize"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/ml/layers"
	"github.com/gomlx/gomlx/ml/layers/activation"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gradsub/gradsub/hooks"
	"github.com/gradsub/gradsub/internal/backends"
	"github.com/gradsub/gradsub/internal/figures"
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
	printTable(results, *flagBackend)
	if *flagJSON != "" {
		if err := figures.WriteJSONLines(*flagJSON, results); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
	}
}

// printTable prints the results as a markdown table, after the backend, machine and feed.
func printTable(results []Result, backendFlag string) {
	fmt.Printf("backend: %s (%s)\nmachine: %s\nfeed: %s\n\n", results[0].Backend, backends.Resolve(backends.Config(backendFlag)),
		backends.Machine(), results[0].Feed)
	fmt.Println("| config | stock ms/step | subspace ms/step | step time ratio (blocks: min–max) | projected layers' gradient FLOPs ratio | step FLOPs ratio (analytic bound) | optimizer state of projected vars | ops per step: stock → subspace (scalar) |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	for _, r := range results {
		fmt.Printf("| %s | %.2f | %.2f | **%.2f** (%.2f–%.2f) | %.3f | %.2f (%.2f) | %s → %s (%.3f) | %d → %d (+%d; scalar %d → %d) |\n",
			r.Config, r.StockStepMs, r.SubspaceStepMs, r.StepTimeRatio, r.BlockRatioMin, r.BlockRatioMax, r.ProjectedGradRatio,
			r.StepFLOPsRatio, r.AnalyticFLOPsRatio, humanize.Bytes(r.StockStateBytes), humanize.Bytes(r.SubspaceStateBytes),
			r.StateBytesRatio, r.StockOps, r.SubspaceOps, r.ProjectorOpsPerStep, r.StockScalarOps, r.SubspaceScalarOps)
	}
}
