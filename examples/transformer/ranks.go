package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/gomlx/compute"
	"github.com/gradsub/gradsub/internal/backends"
	"github.com/gradsub/gradsub/internal/figures"
	"github.com/gradsub/gradsub/internal/plots"
	"github.com/gradsub/gradsub/transformer"
)

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
	backend, corpus, unigram, err := loadRun(corpusFlag, maxBytes, backendFlag)
	if err != nil {
		return nil, err
	}
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
		rows, err := runRank(backend, corpus, unigram, o, r, len(ranks) > 1, outDir, stockRows, stockTimers)
		if err != nil {
			return nil, err
		}
		addToFrontier(&frontier, r, rows)
		allRows = append(allRows, rows...)
		byRank = append(byRank, rows)
	}
	if len(ranks) > 1 && len(frontier.Series) > 0 {
		if err := writeFrontier(outDir, frontier); err != nil {
			return nil, err
		}
	}
	if jsonPath != "" {
		if err := figures.WriteJSONLines(jsonPath, allRows); err != nil {
			return nil, err
		}
	}
	return byRank, nil
}

// loadRun creates the backend and loads the corpus, and says which on stderr.
func loadRun(corpusFlag string, maxBytes int, backendFlag string) (compute.Backend, *transformer.Corpus, float64, error) {
	backend, err := backends.New(backends.Config(backendFlag))
	if err != nil {
		return nil, nil, 0, err
	}
	roots, exts := []string{transformer.GoSource(transformer.GoRoot())}, []string{".go"}
	if corpusFlag != "" {
		roots, exts = strings.Split(corpusFlag, ","), nil
	}
	corpus, err := transformer.LoadCorpus(roots, exts, maxBytes)
	if err != nil {
		return nil, nil, 0, err
	}
	unigram := transformer.UnigramEntropy(corpus.Train)
	fmt.Fprintf(os.Stderr, "machine: %s\n", backends.Machine())
	fmt.Fprintf(os.Stderr, "backend %s (%s); corpus %d files (%d eval), %.1f MB train, %.1f MB eval; unigram entropy %.3f nats/byte\n",
		backend.Name(), backends.Resolve(backends.Config(backendFlag)), corpus.Files, corpus.EvalFiles, float64(len(corpus.Train))/1e6, float64(len(corpus.Eval))/1e6, unigram)
	return backend, corpus, unigram, nil
}

// runRank trains the rank-dependent variants at rank r, times them in turns with the stock
// variants already trained, and writes the rank's report (in its own directory when several
// ranks run).
func runRank(backend compute.Backend, corpus *transformer.Corpus, unigram float64, o Options, r int, several bool, outDir string, stockRows []Row, stockTimers []stepTimer) ([]Row, error) {
	at := o
	at.Rank = r
	dir := outDir
	if several {
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
	return rows, writeRankReport(at, dir, rows, corpus, unigram)
}

// writeFrontier prints the frontier's table and writes it as a picture, markdown and JSON.
func writeFrontier(outDir string, frontier figures.Frontier) error {
	table := frontier.Table()
	fmt.Printf("\n## Frontier: eval loss and step time against AdamW's, by rank\n\n%s", table)
	if err := plots.Frontier(filepath.Join(outDir, "frontier.png"), frontier); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(outDir, "frontier.md"), []byte(table), 0o644); err != nil {
		return err
	}
	if err := frontier.Write(filepath.Join(outDir, "frontier.json")); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote frontier.png, .md and .json in %s\n", outDir)
	return nil
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
