// Command mlp reproduces the original write-up's table: a two-layer MLP (10 hidden units) trained
// by full-batch gradient descent on four classic datasets, stock against the first layer's
// weights trained in a gradient subspace (hooks.Subspace wrapping the same optimizer), in the
// matrix mode (projected gradients computed directly) and the write-up's temporal mode, both by default.
//
//	go run ./examples/mlp                       # both setups and modes, all four datasets, 5 seeds
//	go run ./examples/mlp -dataset digits -setup trained -seeds 3 -json rows.json
//
// The backend is the embedded Go backend unless -backend or $GOMLX_BACKEND names another
// ("xla:cpu", "xla:cuda"; XLA needs a PJRT plugin).
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/gradsub/gradsub/examples/mlp/data"
	"github.com/gradsub/gradsub/hooks"
	"github.com/gradsub/gradsub/internal/backends"
	"github.com/gradsub/gradsub/internal/figures"
	"github.com/janpfeifer/must"
)

// Datasets names the four datasets and how to load them.
var Datasets = []struct {
	Name string
	Load func(dir string) (*data.Dataset, error)
}{
	{"synthetic", func(string) (*data.Dataset, error) { return data.Synthetic(2024, 1000, 20), nil }},
	{"breast_cancer", data.BreastCancer},
	{"digits", func(dir string) (*data.Dataset, error) { return data.DigitsOneVsRest(dir, DigitsPositive) }},
	{"diabetes", data.DiabetesBinarised},
}

// DigitsPositive is the digit the one-vs-rest digits task separates from the others.
const DigitsPositive = 0

func main() {
	var (
		flagDataset = flag.String("dataset", "all", "dataset: all, synthetic, breast_cancer, digits, diabetes")
		flagSetup   = flag.String("setup", "all", "setup: all, seed (20 epochs, warm-up 10, rank 2), trained (500 epochs, rank 4, drift refresh)")
		flagSeeds   = flag.Int("seeds", 3, "seeds per dataset and setup (mean ± std over them); the write-up's reproduction in docs/mlp.md uses 5")
		flagMode    = flag.String("mode", "all", "subspace: all (matrix, then temporal), matrix (projected gradients computed directly) or temporal (the original write-up's)")
		flagJSON    = flag.String("json", "", "also write the rows as JSON objects, one per line, to this file (- for stdout)")
		flagBackend = flag.String("backend", "", `backend: "go" (default), "xla:cpu", "xla:cuda"; default $GOMLX_BACKEND`)
		flagData    = flag.String("data", "", "directory of the datasets (default: the repository's testdata/)")
		flagVerbose = flag.Bool("v", false, "log every SVD of the subspace with its cause")
		flagOut     = flag.String("out", "mlp-report", "directory for the controller pictures' data (controller-<setup>-<mode>.json; draw them with go run ./examples/plot DIR); empty: none")
		flagProfile = flag.String("cpuprofile", "", "write a CPU profile of the run to this file")
	)
	flag.Parse()
	if *flagProfile != "" {
		f, err := os.Create(*flagProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "mlp:", err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "mlp:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	if err := run(*flagDataset, *flagSetup, *flagMode, *flagSeeds, *flagJSON, *flagBackend, *flagData, *flagOut, *flagVerbose); err != nil {
		fmt.Fprintln(os.Stderr, "mlp:", err)
		os.Exit(1)
	}
}

func run(datasetFlag, setupFlag, modeFlag string, seeds int, jsonPath, backendFlag, dataDir, outDir string, verbose bool) error {
	modes, setups, err := parseSelection(datasetFlag, setupFlag, modeFlag, seeds)
	if err != nil {
		return err
	}
	config := backends.Config(backendFlag)
	backend, err := backends.New(config)
	if err != nil {
		return err
	}
	if dataDir == "" && datasetFlag != "synthetic" {
		if dataDir, err = data.FindTestdata(); err != nil {
			return err
		}
	}

	progress := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "  "+format+"\n", args...) }
	var logf func(string, ...any)
	if verbose {
		logf = func(format string, args ...any) { fmt.Fprintf(os.Stderr, "    "+format+"\n", args...) }
	}
	fmt.Fprintf(os.Stderr, "backend: %s (%s); %d seeds per row\n", backend.Name(), config, seeds)
	var rows []Row
	for _, ds := range Datasets {
		if datasetFlag != "all" && datasetFlag != ds.Name {
			continue
		}
		d, err := ds.Load(dataDir)
		if err != nil {
			return err
		}
		d.Name = ds.Name
		for _, setup := range setups {
			for _, mode := range modes {
				row, err := RunRow(backend, d, setup, mode, seeds, progress, logf)
				if err != nil {
					return err
				}
				rows = append(rows, row)
			}
		}
	}
	PrintTable(os.Stdout, rows)
	if outDir != "" {
		for _, mode := range modes {
			if err := plotControllers(outDir, rows, setups, mode, len(modes) > 1); err != nil {
				return err
			}
		}
	}
	if jsonPath != "" {
		return figures.WriteJSONLines(jsonPath, rows)
	}
	return nil
}

// parseSelection reads -dataset, -setup, -mode and -seeds: the modes and setups to run.
func parseSelection(datasetFlag, setupFlag, modeFlag string, seeds int) ([]hooks.Mode, []Setup, error) {
	modes := []hooks.Mode{hooks.Matrix, hooks.Temporal}
	if modeFlag != "all" {
		mode, err := hooks.ParseMode(modeFlag)
		if err != nil {
			return nil, nil, fmt.Errorf("-mode: %w (or all)", err)
		}
		modes = []hooks.Mode{mode}
	}
	if seeds < 1 {
		return nil, nil, fmt.Errorf("-seeds %d: need at least 1 seed", seeds)
	}
	var setups []Setup
	for _, s := range Setups {
		if setupFlag == "all" || setupFlag == s.Name {
			setups = append(setups, s)
		}
	}
	if len(setups) == 0 {
		return nil, nil, fmt.Errorf("-setup %q: unknown setup (use all, seed or trained)", setupFlag)
	}
	var names []string
	for _, d := range Datasets {
		names = append(names, d.Name)
	}
	if datasetFlag != "all" && !slices.Contains(names, datasetFlag) {
		return nil, nil, fmt.Errorf("-dataset %q: unknown dataset (use all, %s)", datasetFlag, strings.Join(names, ", "))
	}
	return modes, setups, nil
}

// PrintTable prints the write-up's columns, plus explained variance and refreshes.
func PrintTable(w io.Writer, rows []Row) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "dataset\tsetup\tmode\tbaseline acc\tsubspace acc\tΔ\tgradient FLOPs (− = cut)\twall time (− = cut)\texplained var\trefreshes\tcontroller time\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.3f ± %.3f\t%.3f ± %.3f\t%+.3f\t%s\t%s\t%.3f\t%.1f\t%.1f%%\t\n",
			r.Dataset, r.Setup, r.Mode, r.BaselineAccuracy, r.BaselineAccuracyStd, r.SubspaceAccuracy, r.SubspaceAccuracyStd,
			r.DeltaAccuracy, change(r.GradientFLOPsRatio), change(r.WallTimeRatio), r.ExplainedVariance, r.Refreshes,
			100*r.ControllerOverhead)
	}
	must.M(tw.Flush())
	fmt.Fprintln(w, "\nGradient FLOPs and wall time: subspace/baseline − 1, as in the original write-up: −75% is a cut to a")
	fmt.Fprintln(w, "quarter, a positive figure means the subspace run did more work or took longer.")
	fmt.Fprintln(w, "Gradient FLOPs: products from the loss to the update (back-propagation, projection, lift), with the gated")
	fmt.Fprintln(w, "learning and checks amortised; counted from the compiled graphs. Temporal mode projects after a full")
	fmt.Fprintln(w, "backward pass, so it cannot save them; matrix mode computes the projected gradient directly.")
	fmt.Fprintln(w, "Controller time: the share of the subspace runs' wall time that drift checks and refreshes after")
	fmt.Fprintln(w, "warm-up took beyond a plain step.")
}

// change is subspace/baseline − 1 in percent (negative: a cut), the original write-up's sign.
func change(ratio float64) string {
	return fmt.Sprintf("%+.1f%%", 100*(ratio-1))
}

// plotControllers writes, per setup, the data of a picture of the first seed's subspace run on
// each dataset (loss, residual at the drift checks, rank), for examples/plot to draw.
// With several modes, each has its own (controller-<setup>-<mode>.json).
func plotControllers(outDir string, rows []Row, setups []Setup, mode hooks.Mode, perMode bool) error {
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	for _, setup := range setups {
		fig := figures.Controller{Title: fmt.Sprintf("MLP, %s setup, %s subspace (seed 1)", setup.Name, mode), Threshold: hooks.DefaultResidualThreshold}
		for _, r := range rows {
			if r.Setup == setup.Name && r.Mode == mode.String() {
				fig.Series = append(fig.Series, figures.Series{Name: r.Dataset, Loss: r.FirstSeed.Loss, History: r.FirstSeed.History})
			}
		}
		name := "controller-" + setup.Name
		if perMode {
			name += "-" + mode.String()
		}
		path := filepath.Join(outDir, name+".json")
		if err := fig.Write(path); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "wrote %s (draw it: go run ./examples/plot %s)\n", path, outDir)
	}
	return nil
}
