// Command quality runs the quality suite: small models written independently of the projector,
// each trained with stock Adam, a reference GaLore (full gradient, exact SVD every 200 steps,
// projection), a fixed random basis, and the projector in matrix and temporal mode, on the same
// initialisation and batches per seed. It prints eval loss and accuracy, mean ± std over seeds.
//
//	GOTOOLCHAIN=auto GOEXPERIMENT=simd go run ./examples/quality
//	GOTOOLCHAIN=auto GOEXPERIMENT=simd go run ./examples/quality -seeds 1 -tasks lm -variants stock,matrix
//	GOTOOLCHAIN=auto GOEXPERIMENT=simd go run ./examples/quality -tasks lm -variants stock,galore,matrix -lr 3e-3,6e-3,1e-2,1.5e-2
//
// Given several learning rates (-lr), it runs each variant at each, and prints a second table:
// each variant at its best rate, against stock at its own best.
package main

import (
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/gomlx/compute"
	"github.com/gradsub/gradsub/hooks"
	"github.com/gradsub/gradsub/internal/backends"
	"github.com/gradsub/gradsub/internal/figures"
	"github.com/gradsub/gradsub/internal/plots"
	"github.com/gradsub/gradsub/internal/quality"
)

func main() {
	seeds := flag.Int("seeds", 0, "seeds per variant (0: each task's own, 3; the wide MLP's 10)")
	steps := flag.Int("steps", 0, "training steps (0: each task's own, 300)")
	tasks := flag.String("tasks", "lm,tiedlm,mlp,conv,wide", "tasks: lm (attention LM), tiedlm (the attention LM with its head tied to its token table), mlp (MLP classifier), conv (conv net), wide (wide MLP); also resmlp (a residual MLP at batch 1,024), convwide (a wider conv net at batch 64) and lmwide (the attention LM at width 256), outside the suite")
	variants := flag.String("variants", strings.Join(quality.Variants, ","), "variants to run")
	lrFlag := flag.String("lr", "", "learning rate of every variant, or a comma-separated list to sweep (empty: each task's own)")
	scale := flag.Float64("scale", 1, "the projector variants' step scale (hooks.Config.Scale; 0: automatic, √(side/rank))")
	complement := flag.Int("complement", hooks.AutoComplement, "the projector variants' random complement directions per matrix (hooks.Config.Complement; -1: automatic, 0: none, the published method's step)")
	complementScale := flag.Float64("complement-scale", hooks.DefaultComplementScale, "their step against the tracked directions' (hooks.Config.ComplementScale)")
	adaptation := flag.Float64("scale-adaptation", hooks.DefaultScaleAdaptation, "the step-length rule's rate of matrix and default (hooks.Config.ScaleAdaptation; 0: off)")
	trace := flag.Int("trace", 0, "print each run's training loss every this many steps (0: none)")
	rank := flag.Int("rank", 0, "rank of every projected variant (0: each task's own, width/8)")
	ranksFlag := flag.String("ranks", "", "a comma-separated list of ranks to run in turn instead of -rank (stock trains once a task), then draw each task's frontier of eval loss against step time (frontier-<task>.png and .md in -out)")
	outDir := flag.String("out", "quality-report", "directory of the frontier pictures and tables (with -ranks)")
	backendFlag := flag.String("backend", "", "GoMLX backend (default: $GOMLX_BACKEND, else the Go backend)")
	project := flag.String("project", "", "regexp of the variables to project (empty: each task's own for galore, random and temporal, the default selection for matrix and plain); default, the one option, always chooses its own")
	wideBatch := flag.Int("wide-batch", 0, "batch of the wide MLP (0: its own, 128; at 2048 the one option projects its 512×512 matrix)")
	flag.Parse()
	rates, err := parseRates(*lrFlag)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ranks, err := figures.ParseRanks(*ranksFlag, *rank, 1)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	backend, err := backends.New(backends.Config(*backendFlag))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "machine: %s\n", backends.Machine())
	byName := tasksByName(*wideBatch)
	sw := sweep{backend: backend, seeds: *seeds, steps: *steps, variants: strings.Split(*variants, ","),
		rates: rates, ranks: ranks, trace: *trace, flags: projectorFlags{*scale, *project, *complement, *complementScale, *adaptation}}
	var results []quality.Result
	for _, name := range strings.Split(*tasks, ",") {
		task, ok := byName[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown task %q (use lm, tiedlm, mlp, conv, wide, resmlp, convwide, lmwide)\n", name)
			os.Exit(2)
		}
		if *project != "" {
			task.Project = *project
		}
		rs, err := sw.task(task)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		results = append(results, rs...)
	}
	if err := report(results, len(ranks) > 1, len(rates) > 1, *outDir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// tasksByName are the tasks -tasks names; the wide MLP at wideBatch rows a step (0: its own).
func tasksByName(wideBatch int) map[string]quality.Task {
	byName := map[string]quality.Task{"lm": quality.AttentionLM(), "tiedlm": quality.TiedAttentionLM(), "mlp": quality.MLPClassifier(), "conv": quality.ConvNet(), "wide": quality.WideMLP(), "resmlp": quality.ResidualMLP(), "convwide": quality.WideConvNet(), "lmwide": quality.WideAttentionLM()}
	if wideBatch > 0 {
		byName["wide"] = quality.WideMLPAt(wideBatch)
	}
	return byName
}

// report prints the results' table by task and rate, writes the frontiers (several ranks) and
// prints each variant at its best rate (several rates).
func report(results []quality.Result, ranks, rates bool, outDir string) error {
	summaries := quality.Summarize(results)
	printTable(summaries, func(s quality.Summary) string { return s.Task + "\x00" + fmt.Sprint(s.LR) })
	if ranks {
		if err := writeFrontiers(summaries, outDir); err != nil {
			return err
		}
	}
	if rates {
		fmt.Println("\neach variant at its best learning rate (loss / stock: against stock at its own best)")
		printTable(quality.AtBestRate(summaries), func(s quality.Summary) string { return s.Task })
	}
	return nil
}

// sweep is what every task runs: its variants at each rank and learning rate, over its seeds.
type sweep struct {
	backend  compute.Backend
	seeds    int // 0: each task's own
	steps    int // 0: each task's own
	variants []string
	rates    []float64 // 0: the task's own
	ranks    []int     // 0: the task's own
	trace    int       // print the training loss every this many steps (0: none)
	flags    projectorFlags
}

// task runs the sweep on one task; stock and the one option train once (the rank does not
// change them).
func (sw sweep) task(task quality.Task) ([]quality.Result, error) {
	n := task.Seeds
	if sw.seeds > 0 {
		n = sw.seeds
	}
	var results []quality.Result
	for ri, r := range sw.ranks {
		if r > 0 {
			task.Rank = r
		}
		for _, variant := range sw.variants {
			if why, skip := task.Skip[variant]; skip {
				fmt.Fprintf(os.Stderr, "%-14s %-9s not run: %s\n", task.Name, variant, why)
				continue
			}
			if ri > 0 && (variant == quality.Stock || variant == quality.Default) {
				continue
			}
			for _, lr := range sw.rates {
				atRate := task
				if lr > 0 {
					atRate.LR = lr
				}
				for seed := range int64(n) {
					res, err := sw.run(atRate, variant, seed+1)
					if err != nil {
						return nil, err
					}
					results = append(results, res)
				}
			}
		}
	}
	return results, nil
}

// run trains one variant on one seed, and prints its result (and its training loss with -trace).
func (sw sweep) run(task quality.Task, variant string, seed int64) (quality.Result, error) {
	o := quality.Options{Steps: sw.steps}
	o.Config = projectorOptions(variant, sw.flags)
	var losses []string
	if sw.trace > 0 {
		o.Trace = func(step int, loss float64) {
			if step%sw.trace == 0 {
				losses = append(losses, fmt.Sprintf("%.2f", loss))
			}
		}
	}
	r, err := quality.Run(sw.backend, task, variant, seed, o)
	if err != nil {
		return r, err
	}
	fmt.Fprintf(os.Stderr, "%-14s %-9s lr %-7g seed %d: eval loss %.3f, accuracy %.3f, %.1f ms/step %s\n",
		r.Task, r.Variant, r.LR, r.Seed, r.EvalLoss, r.Accuracy, r.StepMs, r.Notes)
	if len(losses) > 0 {
		fmt.Fprintf(os.Stderr, "  training loss every %d steps: %s\n", sw.trace, strings.Join(losses, " "))
	}
	return r, nil
}

// projectorFlags are the flags that change the projector variants' options.
type projectorFlags struct {
	scale           float64
	project         string
	complement      int
	complementScale float64
	adaptation      float64
}

// projectorOptions are the flags' changes to a projector variant's options (nil: none): the step
// scale, the complement and the step-length rule (of the variants that have them: plain is the
// step without them), and the variables matrix mode projects (the one option, default, keeps its
// own choice).
func projectorOptions(variant string, f projectorFlags) func(*hooks.Config) *hooks.Config {
	chosen := variant == quality.Matrix || variant == quality.Plain        // variants whose variables -project picks
	defaultStep := variant == quality.Matrix || variant == quality.Default // the step with the complement and the step-length rule
	if f.scale == 1 && (!defaultStep || f.complement == hooks.AutoComplement && f.complementScale == hooks.DefaultComplementScale && f.adaptation == hooks.DefaultScaleAdaptation) &&
		(f.project == "" || !chosen) {
		return nil
	}
	return func(c *hooks.Config) *hooks.Config {
		if f.scale != 1 {
			c = c.Scale(f.scale)
		}
		if defaultStep {
			c = c.Complement(f.complement).ComplementScale(f.complementScale).ScaleAdaptation(f.adaptation)
		}
		if f.project != "" && chosen {
			c = c.Matching(f.project)
		}
		return c
	}
}

// printTable prints the summaries, each loss beside stock's of the same key (task and rate, or
// task alone).
func printTable(summaries []quality.Summary, key func(quality.Summary) string) {
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "task\tvariant\trank\tlr\teval loss\taccuracy\tloss / stock\tms/step")
	stock := map[string]float64{}
	for _, s := range summaries {
		if s.Variant == quality.Stock {
			stock[key(s)] = s.Loss
		}
	}
	for _, s := range summaries {
		ratio := "-"
		if l, ok := stock[key(s)]; ok {
			ratio = fmt.Sprintf("%.2f", s.Loss/l)
		}
		rank := fmt.Sprint(s.Rank)
		if s.Variant == quality.Stock || s.Variant == quality.Default {
			rank = "-" // stock projects nothing; the one option chooses its own
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%g\t%.3f ± %.3f\t%.3f ± %.3f\t%s\t%.1f\n", s.Task, s.Variant, rank, s.LR, s.Loss, s.LossStd, s.Acc, s.AccStd, ratio, s.StepMs)
	}
	w.Flush()
}

// writeFrontiers draws, for each task, each variant's eval loss and step time against stock's
// (of the same task and learning rate), by rank: frontier-<task>.png and .md in dir.
func writeFrontiers(summaries []quality.Summary, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	stock := map[string]quality.Summary{}
	var tasks []string
	for _, s := range summaries {
		if s.Variant == quality.Stock {
			stock[s.Task+fmt.Sprint(s.LR)] = s
			tasks = append(tasks, s.Task)
		}
	}
	for _, task := range slices.Compact(tasks) {
		fig := figures.Frontier{Title: fmt.Sprintf("%s: quality against step time, by rank", task)}
		for _, s := range summaries {
			ref, ok := stock[s.Task+fmt.Sprint(s.LR)]
			if s.Task != task || !ok || s.Variant == quality.Stock || s.Variant == quality.Default || ref.StepMs == 0 {
				continue
			}
			fig.Add(s.Variant, figures.FrontierPoint{Rank: s.Rank, StepRatio: s.StepMs / ref.StepMs, LossRatio: s.Loss / ref.Loss})
		}
		if len(fig.Series) == 0 {
			continue
		}
		name := "frontier-" + strings.ReplaceAll(task, " ", "-")
		table := fig.Table()
		fmt.Printf("\n%s: eval loss and step time against stock's, by rank\n\n%s", task, table)
		if err := os.WriteFile(filepath.Join(dir, name+".md"), []byte(table), 0o644); err != nil {
			return err
		}
		if err := plots.Frontier(filepath.Join(dir, name+".png"), fig); err != nil {
			return err
		}
		if err := fig.Write(filepath.Join(dir, name+".json")); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "wrote %s.png, .md and .json in %s\n", name, dir)
	}
	return nil
}

// parseRates reads -lr: empty is each task's own rate (0), else one or more positive rates.
func parseRates(text string) ([]float64, error) {
	if strings.TrimSpace(text) == "" {
		return []float64{0}, nil
	}
	var rates []float64
	for _, field := range strings.Split(text, ",") {
		lr, err := strconv.ParseFloat(strings.TrimSpace(field), 64)
		if err != nil || !(lr > 0) || math.IsInf(lr, 0) {
			return nil, fmt.Errorf("-lr %q: %q is not a positive learning rate (give one, or a comma-separated list such as 3e-3,6e-3,1e-2)", text, field)
		}
		rates = append(rates, lr)
	}
	return rates, nil
}
