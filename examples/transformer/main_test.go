package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gradsub/gradsub/internal/figures"
	"github.com/gradsub/gradsub/transformer"
	"github.com/stretchr/testify/require"
)

func tinyOptions() Options {
	return Options{
		Model: transformer.Config{Vocab: 256, Width: 32, Depth: 1, Heads: 2, MLP: 64, SeqLen: 16},
		Steps: 14, Batch: 2, Rank: 4, LR: 3e-3, SGDLR: 0.1, WeightDecay: 0.01,
		EvalEvery: 7, EvalBatches: 2, WarmUp: 3, CheckEvery: 5, Seed: 1, Variants: allVariants, Quiet: true,
	}
}

func TestComparisonWritesTableReportPlotAndJSON(t *testing.T) {
	dir := t.TempDir()
	jsonPath := filepath.Join(dir, "rows.json")
	corpus := transformer.GoSource(transformer.GoRoot()) + "/strings"
	require.NoError(t, run(tinyOptions(), []int{4}, corpus, 300_000, dir, jsonPath, "go"))
	for _, name := range []string{"loss.png", "controller.png", "report.md", "trace-subspace-matrix.jsonl", "trace-subspace-temporal.jsonl"} {
		info, err := os.Stat(filepath.Join(dir, name))
		require.NoError(t, err)
		require.Positive(t, info.Size())
	}
	raw, err := os.ReadFile(jsonPath)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	require.Len(t, lines, len(allVariants))
	modes := map[string]string{}
	ops := map[string]float64{}
	for _, line := range lines {
		var row map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &row))
		for _, key := range []string{"optimizer", "mode", "step_ms", "eval_loss", "gradient_flops_per_step", "optimizer_state_bytes"} {
			require.Contains(t, row, key)
		}
		modes[row["variant"].(string)] = row["mode"].(string)
		require.Positive(t, row["eval_loss"].(float64))
		ops[row["variant"].(string)] = row["ops_per_step"].(float64)
		require.Less(t, row["scalar_ops_per_step"].(float64), row["ops_per_step"].(float64))
		// Every variant but AdamW gets the spread of its timing blocks' ratios to AdamW's.
		if row["variant"] != "adamw" {
			lo, hi := row["block_ratio_min"].(float64), row["block_ratio_max"].(float64)
			require.Positive(t, lo)
			require.LessOrEqual(t, lo, hi)
		} else {
			require.NotContains(t, row, "block_ratio_min")
		}
	}
	require.Equal(t, map[string]string{"adamw": "stock", "adam": "stock", "sgd": "stock",
		"subspace-temporal": "temporal", "subspace-matrix": "matrix"}, modes)
	require.Positive(t, ops["adamw"])
	require.Greater(t, ops["subspace-matrix"], ops["adamw"], "the projector's ops come on top of the model's")
	// The step's ops are kernel launches on an accelerator (issue 28): the rules' fixed ops, which
	// TestOpsPerProjectedMatrix does not see, are pinned here (1,296 against AdamW's 728 on
	// 2026-12-07; 1,648 before the packs of small unprojected variables; a rise past the margin
	// is a new op count to justify). The default width's bound: transformer's ops_test.go.
	require.LessOrEqual(t, ops["subspace-matrix"], 1330.0, "ops a step: AdamW %.0f, the projector %.0f", ops["adamw"], ops["subspace-matrix"])
}

func TestRunRejectsBadInput(t *testing.T) {
	o := tinyOptions()
	o.Variants = []string{"lion"}
	require.ErrorContains(t, run(o, []int{4}, "", 1000, t.TempDir(), "", "go"), `unknown variant "lion"`)
	o = tinyOptions()
	o.Model.Heads = 3
	require.ErrorContains(t, run(o, []int{4}, "", 1000, t.TempDir(), "", "go"), "not a multiple of 3 heads")
	require.ErrorContains(t, run(tinyOptions(), []int{4}, "/no/such/corpus", 1000, t.TempDir(), "", "go"), "/no/such/corpus")
	require.ErrorContains(t, run(tinyOptions(), []int{4}, "", 1000, t.TempDir(), "", "nope"), `unknown backend "nope"`)
}

// TestFrontierRunsEachRankAndDrawsIt: with several ranks, the stock variant trains once, each
// rank runs GaLore's reference, matrix mode without and with its complement, and the frontier
// (eval loss and step time against AdamW's, by rank) is drawn and tabulated.
func TestFrontierRunsEachRankAndDrawsIt(t *testing.T) {
	dir := t.TempDir()
	jsonPath := filepath.Join(dir, "rows.json")
	o := tinyOptions()
	o.Steps, o.EvalEvery = 6, 3
	o.Variants = []string{"adamw", galoreVariant, plainMatrixVariant, "subspace-matrix"}
	corpus := transformer.GoSource(transformer.GoRoot()) + "/strings"
	require.NoError(t, run(o, []int{2, 4}, corpus, 300_000, dir, jsonPath, "go"))
	for _, name := range []string{"frontier.png", "frontier.md", "frontier.json", "rank-2/report.md", "rank-4/loss.png"} {
		info, err := os.Stat(filepath.Join(dir, name))
		require.NoError(t, err, name)
		require.Positive(t, info.Size())
	}
	table, err := os.ReadFile(filepath.Join(dir, "frontier.md"))
	require.NoError(t, err)
	for _, want := range []string{"| 2 |", "| 4 |", "galore: loss", plainMatrixVariant + ": loss", "subspace-matrix: loss"} {
		require.Contains(t, string(table), want)
	}
	raw, err := os.ReadFile(jsonPath)
	require.NoError(t, err)
	require.Len(t, strings.Split(strings.TrimSpace(string(raw)), "\n"), 2*4, "AdamW's row in each rank's table, and three variants a rank")
	require.ErrorContains(t, run(o, []int{0}, corpus, 300_000, dir, "", "go"), "needs a rank")
}

func TestAnalyticGradientRatio(t *testing.T) {
	// Width 256, sequence 128: the estimate of the bound is about 0.54.
	r := AnalyticGradientRatio(transformer.DefaultConfig(), 8, func(int, int) int { return 8 })
	require.Greater(t, r, 0.45)
	require.Less(t, r, 0.65)
	// More rank costs more; no projection is the stock ratio's ceiling.
	require.Less(t, r, AnalyticGradientRatio(transformer.DefaultConfig(), 8, func(int, int) int { return 64 }))
}

// TestScalingRunsEachWidthAndDrawsIt: -widths runs AdamW, the one option and rank width/16 at
// each width, and writes the cost against width as a table, a picture and JSON.
func TestScalingRunsEachWidthAndDrawsIt(t *testing.T) {
	dir := t.TempDir()
	o := tinyOptions()
	o.Steps, o.EvalEvery = 4, 2
	corpus := transformer.GoSource(transformer.GoRoot()) + "/strings"
	require.NoError(t, runScaling(o, []int{32, 64}, corpus, 300_000, dir, "go"))
	for _, name := range []string{"scaling.png", "scaling.md", "scaling.json", "width-32/rank-0/report.md", "width-64/rank-4/report.md"} {
		info, err := os.Stat(filepath.Join(dir, name))
		require.NoError(t, err, name)
		require.Positive(t, info.Size())
	}
	fig, err := figures.ReadScaling(filepath.Join(dir, "scaling.json"))
	require.NoError(t, err)
	require.Len(t, fig.Points, 4, "two widths, two ranks each")
	for _, p := range fig.Points {
		require.Positive(t, p.StepRatio)
		require.Positive(t, p.GradientRatio)
		require.Positive(t, p.StockOps)
		require.Positive(t, p.StockState)
	}
	table, err := os.ReadFile(filepath.Join(dir, "scaling.md"))
	require.NoError(t, err)
	for _, want := range []string{"| 32 | one option | automatic", "| 64 | rank width/16 | 4 |"} {
		require.Contains(t, string(table), want)
	}
	_, err = parseWidths("256,x")
	require.ErrorContains(t, err, `"x" is not a width ≥ 16`)
}
