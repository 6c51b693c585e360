package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/gradsub/gradsub/internal/figures"
	"github.com/gradsub/gradsub/internal/plots"
)

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
