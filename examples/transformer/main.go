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
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"strings"

	"github.com/gradsub/gradsub/hooks"
	"github.com/gradsub/gradsub/internal/figures"
	"github.com/gradsub/gradsub/transformer"
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
	// ScaleAdaptation is matrix mode's step-length rule's rate (hooks.Config.ScaleAdaptation; 0:
	// off); nil keeps the default.
	ScaleAdaptation *float64
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
		adapt    = flag.Float64("scale-adaptation", hooks.DefaultScaleAdaptation, "matrix mode's step-length rule's rate (hooks.Config.ScaleAdaptation; 0: off, the published method's fixed scale)")
		sgdLR    = flag.Float64("sgd-lr", 0.3, "SGD learning rate")
		corpus   = flag.String("corpus", "", "comma-separated text files or directories (default: $(go env GOROOT)/src, .go files)")
		maxBytes = flag.Int("max-bytes", 8<<20, "read at most this many corpus bytes")
		variants = flag.String("variants", strings.Join(allVariants, ","), "comma-separated variants to compare")
		out      = flag.String("out", "transformer-report", "directory for loss.png and report.md")
		jsonPath = flag.String("json", "", "also write the rows as JSON lines to this file")
		backendF = flag.String("backend", "", `backend: "go" (default), "xla:cpu", "xla:cuda"; default $GOMLX_BACKEND`)
		quiet    = flag.Bool("q", false, "no progress bars")
		unfused  = flag.Bool("unfused-attention", false, "compute attention from its parts, not GoMLX's fused op (on the Go backend's AVX2 kernels the fused op is the slower; losses differ by rounding: compare runs of one build)")
		profile  = flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file (go tool pprof)")
	)
	flag.Parse()
	if err := startCPUProfile(*profile); err != nil {
		fmt.Fprintln(os.Stderr, "transformer:", err)
		os.Exit(2)
	}
	defer stopProfile()
	o := Options{
		Model: transformer.Config{Vocab: 256, Width: *width, Depth: *depth, Heads: *heads, MLP: *mlp, SeqLen: *seq, UnfusedAttention: *unfused},
		Steps: *steps, Batch: *batch, Rank: *rank, LR: *lr, SGDLR: *sgdLR, WeightDecay: 0.01,
		EvalEvery: max(1, *steps/10), EvalBatches: 8, WarmUp: *warmUp, CheckEvery: *check, MaxRank: *maxRank, TrackingRate: *tracking, Scale: scale, Complement: compl, ComplementScale: complSc, ScaleAdaptation: adapt, Seed: 1, Variants: strings.Split(*variants, ","), Quiet: *quiet,
	}
	if code, err := runAll(o, *widths, *ranks, *corpus, *maxBytes, *out, *jsonPath, *backendF); err != nil {
		fmt.Fprintln(os.Stderr, "transformer:", err)
		exit(code)
	}
}

// runAll runs the comparison the flags ask for: across widths (-widths), or across ranks at the
// model's width. It returns the exit code of its error: 2 for bad flags, 1 for a failed run.
func runAll(o Options, widths, ranks, corpus string, maxBytes int, out, jsonPath, backendF string) (int, error) {
	if widths != "" {
		widthList, err := parseWidths(widths)
		if err != nil {
			return 2, err
		}
		return 1, runScaling(o, widthList, corpus, maxBytes, out, backendF)
	}
	rankList, err := figures.ParseRanks(ranks, o.Rank, 0)
	if err != nil {
		return 2, err
	}
	return 1, run(o, rankList, corpus, maxBytes, out, jsonPath, backendF)
}

// stopProfile ends the CPU profile, if one runs, before an exit (os.Exit skips deferred calls).
var stopProfile = func() {}

func exit(code int) {
	stopProfile()
	os.Exit(code)
}

// startCPUProfile profiles the run into path ("": none) until stopProfile.
func startCPUProfile(path string) error {
	if path == "" {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("-cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return fmt.Errorf("-cpuprofile %s: %w", path, err)
	}
	stopProfile = func() {
		pprof.StopCPUProfile()
		f.Close()
		stopProfile = func() {}
	}
	return nil
}

// rankDependent says whether a variant's run depends on the rank (the stock ones train once).
func rankDependent(variant string) bool {
	return strings.HasPrefix(variant, "subspace-") || variant == galoreVariant
}

func run(o Options, ranks []int, corpusFlag string, maxBytes int, outDir, jsonPath, backendFlag string) error {
	_, err := runRanks(o, ranks, corpusFlag, maxBytes, outDir, jsonPath, backendFlag)
	return err
}
