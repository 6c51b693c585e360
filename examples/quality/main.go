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
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/gradsub/gradsub/hooks"
	"github.com/gradsub/gradsub/internal/backends"
	"github.com/gradsub/gradsub/internal/quality"
)

func main() {
	seeds := flag.Int("seeds", 0, "seeds per variant (0: each task's own, 3; the wide MLP's 10)")
	steps := flag.Int("steps", 0, "training steps (0: each task's own, 300)")
	tasks := flag.String("tasks", "lm,mlp,conv,wide", "tasks: lm (attention LM), mlp (MLP classifier), conv (conv net), wide (wide MLP); also resmlp (a residual MLP at batch 1,024), convwide (a wider conv net at batch 64) and lmwide (the attention LM at width 256), outside the suite")
	variants := flag.String("variants", strings.Join(quality.Variants, ","), "variants to run")
	lrFlag := flag.String("lr", "", "learning rate of every variant, or a comma-separated list to sweep (empty: each task's own)")
	scale := flag.Float64("scale", 1, "the projector variants' step scale (hooks.Config.Scale; 0: automatic, √(side/rank))")
	trace := flag.Int("trace", 0, "print each run's training loss every this many steps (0: none)")
	rank := flag.Int("rank", 0, "rank of every projected variant (0: each task's own, width/8)")
	backendFlag := flag.String("backend", "", "GoMLX backend (default: $GOMLX_BACKEND, else the Go backend)")
	project := flag.String("project", "", "regexp of the variables to project (empty: each task's own for galore, random and temporal, the default selection for matrix); default, the one option, always chooses its own")
	wideBatch := flag.Int("wide-batch", 0, "batch of the wide MLP (0: its own, 128; at 2048 the one option projects its 512×512 matrix)")
	flag.Parse()
	rates, err := parseRates(*lrFlag)
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
	byName := map[string]quality.Task{"lm": quality.AttentionLM(), "mlp": quality.MLPClassifier(), "conv": quality.ConvNet(), "wide": quality.WideMLP(), "resmlp": quality.ResidualMLP(), "convwide": quality.WideConvNet(), "lmwide": quality.WideAttentionLM()}
	if *wideBatch > 0 {
		byName["wide"] = quality.WideMLPAt(*wideBatch)
	}
	var results []quality.Result
	for _, name := range strings.Split(*tasks, ",") {
		task, ok := byName[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown task %q (use lm, mlp, conv, wide, resmlp, convwide, lmwide)\n", name)
			os.Exit(2)
		}
		if *rank > 0 {
			task.Rank = *rank
		}
		if *project != "" {
			task.Project = *project
		}
		n := task.Seeds
		if *seeds > 0 {
			n = *seeds
		}
		for _, variant := range strings.Split(*variants, ",") {
			if why, skip := task.Skip[variant]; skip {
				fmt.Fprintf(os.Stderr, "%-14s %-9s not run: %s\n", task.Name, variant, why)
				continue
			}
			for _, lr := range rates {
				atRate := task
				if lr > 0 {
					atRate.LR = lr
				}
				for seed := range int64(n) {
					o := quality.Options{Steps: *steps}
					o.Config = projectorOptions(variant, *scale, *project)
					var losses []string
					if *trace > 0 {
						o.Trace = func(step int, loss float64) {
							if step%*trace == 0 {
								losses = append(losses, fmt.Sprintf("%.2f", loss))
							}
						}
					}
					r, err := quality.Run(backend, atRate, variant, seed+1, o)
					if err != nil {
						fmt.Fprintln(os.Stderr, err)
						os.Exit(1)
					}
					fmt.Fprintf(os.Stderr, "%-14s %-9s lr %-7g seed %d: eval loss %.3f, accuracy %.3f, %.1f ms/step %s\n",
						r.Task, r.Variant, r.LR, r.Seed, r.EvalLoss, r.Accuracy, r.StepMs, r.Notes)
					if len(losses) > 0 {
						fmt.Fprintf(os.Stderr, "  training loss every %d steps: %s\n", *trace, strings.Join(losses, " "))
					}
					results = append(results, r)
				}
			}
		}
	}
	summaries := quality.Summarize(results)
	printTable(summaries, func(s quality.Summary) string { return s.Task + "\x00" + fmt.Sprint(s.LR) })
	if len(rates) > 1 {
		fmt.Println("\neach variant at its best learning rate (loss / stock: against stock at its own best)")
		printTable(quality.AtBestRate(summaries), func(s quality.Summary) string { return s.Task })
	}
}

// projectorOptions are the flags' changes to a projector variant's options (nil: none): the step
// scale, and the variables matrix mode projects (the one option, default, keeps its own choice).
func projectorOptions(variant string, scale float64, project string) func(*hooks.Config) *hooks.Config {
	if scale == 1 && (project == "" || variant != quality.Matrix) {
		return nil
	}
	return func(c *hooks.Config) *hooks.Config {
		if scale != 1 {
			c = c.Scale(scale)
		}
		if project != "" && variant == quality.Matrix {
			c = c.Matching(project)
		}
		return c
	}
}

// printTable prints the summaries, each loss beside stock's of the same key (task and rate, or
// task alone).
func printTable(summaries []quality.Summary, key func(quality.Summary) string) {
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "task\tvariant\tlr\teval loss\taccuracy\tloss / stock\tms/step")
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
		fmt.Fprintf(w, "%s\t%s\t%g\t%.3f ± %.3f\t%.3f ± %.3f\t%s\t%.1f\n", s.Task, s.Variant, s.LR, s.Loss, s.LossStd, s.Acc, s.AccStd, ratio, s.StepMs)
	}
	w.Flush()
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
