package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gomlx/compute/support/humanize"
	"github.com/gradsub/gradsub/hooks"
	"github.com/gradsub/gradsub/internal/figures"
	"github.com/gradsub/gradsub/internal/plots"
	"github.com/gradsub/gradsub/transformer"
)

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
