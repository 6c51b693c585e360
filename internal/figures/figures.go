// Package figures is the data of the examples' pictures: the drift controller's (the examples
// write it as JSON, and examples/plot draws it, internal/plots) and the frontier of quality
// against step time. The examples themselves then do
// not compile a plotting library, which is a sixth of a fresh build of the first command.
package figures

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/gradsub/gradsub/hooks"
)

// Series is one training run seen by a hooks.Monitor: its loss at every step (index = step − 1)
// and the monitor's history.
type Series struct {
	Name    string         `json:"name"`
	Loss    []float64      `json:"loss"`
	History []hooks.Sample `json:"history"`
}

// Controller is a picture of several runs' controllers: loss, residual at the drift checks with
// the refreshes marked, and rank, against the step; Threshold is drawn on the residual panel.
type Controller struct {
	Title     string   `json:"title"`
	Threshold float64  `json:"threshold"`
	Series    []Series `json:"series"`
}

// Write writes the figure's data to path as JSON.
func (c Controller) Write(path string) error { return writeJSON(path, c) }

// Read reads a figure written by Write.
func Read(path string) (Controller, error) {
	c, err := readJSON[Controller](path, "a controller figure's")
	if err == nil && len(c.Series) == 0 {
		err = fmt.Errorf("%s holds no series to draw", path)
	}
	return c, err
}

// WriteJSONLines writes rows to path ("-": standard output), one JSON object a line: the
// examples' -json output.
func WriteJSONLines[T any](path string, rows []T) error {
	var out io.Writer = os.Stdout
	var f *os.File
	if path != "-" {
		var err error
		if f, err = os.Create(path); err != nil {
			return err
		}
		out = f
	}
	enc := json.NewEncoder(out)
	for _, r := range rows {
		if err := enc.Encode(r); err != nil {
			if f != nil {
				f.Close()
			}
			return err
		}
	}
	if f != nil {
		return f.Close()
	}
	return nil
}

func writeJSON(path string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

// readJSON reads a T from the JSON file at path; what names the data in the error.
func readJSON[T any](path, what string) (T, error) {
	var v T
	data, err := os.ReadFile(path)
	if err != nil {
		return v, err
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return v, fmt.Errorf("%s is not %s data: %w", path, what, err)
	}
	return v, nil
}

// Frontier is a picture of quality against cost: each series (a variant) is a line through its
// points, one per rank, at (step time, eval loss), both as ratios to stock's in the same run.
type Frontier struct {
	Title  string           `json:"title"`
	Series []FrontierSeries `json:"series"`
}

// FrontierSeries is one variant's points, in the order of its ranks.
type FrontierSeries struct {
	Name   string          `json:"name"`
	Points []FrontierPoint `json:"points"`
}

// FrontierPoint is one run: its rank, and its step time and eval loss as ratios to stock's.
type FrontierPoint struct {
	Rank      int     `json:"rank"`
	StepRatio float64 `json:"step_ratio"`
	LossRatio float64 `json:"loss_ratio"`
}

// Write writes the frontier's data to path as JSON.
func (f Frontier) Write(path string) error { return writeJSON(path, f) }

// ReadFrontier reads a frontier written by Frontier.Write.
func ReadFrontier(path string) (Frontier, error) {
	f, err := readJSON[Frontier](path, "a frontier's")
	if err == nil && len(f.Series) == 0 {
		err = fmt.Errorf("%s holds no series to draw", path)
	}
	return f, err
}

// Add appends a point to the series named name, creating it in first-seen order.
func (f *Frontier) Add(name string, p FrontierPoint) {
	for i := range f.Series {
		if f.Series[i].Name == name {
			f.Series[i].Points = append(f.Series[i].Points, p)
			return
		}
	}
	f.Series = append(f.Series, FrontierSeries{Name: name, Points: []FrontierPoint{p}})
}

// Table renders the frontier as a markdown table: a row per rank, a column pair (loss, step
// time) per series.
func (f Frontier) Table() string {
	var ranks []int
	seen := map[int]bool{}
	for _, s := range f.Series {
		for _, p := range s.Points {
			if !seen[p.Rank] {
				seen[p.Rank] = true
				ranks = append(ranks, p.Rank)
			}
		}
	}
	sort.Ints(ranks)
	var b strings.Builder
	b.WriteString("| rank |")
	for _, s := range f.Series {
		fmt.Fprintf(&b, " %s: loss | step |", s.Name)
	}
	b.WriteString("\n|---|")
	for range f.Series {
		b.WriteString("---|---|")
	}
	b.WriteString("\n")
	for _, r := range ranks {
		fmt.Fprintf(&b, "| %d |", r)
		for _, s := range f.Series {
			cell := " — | — |"
			for _, p := range s.Points {
				if p.Rank == r {
					cell = fmt.Sprintf(" %.3f | %.2f |", p.LossRatio, p.StepRatio)
				}
			}
			b.WriteString(cell)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// ParseRanks reads an example's -ranks flag, the ranks of a frontier: a comma-separated list of
// ranks ≥ least, or, when empty, fallback alone (the example's -rank).
func ParseRanks(list string, fallback, least int) ([]int, error) {
	if strings.TrimSpace(list) == "" {
		return []int{fallback}, nil
	}
	var ranks []int
	for _, field := range strings.Split(list, ",") {
		r, err := strconv.Atoi(strings.TrimSpace(field))
		if err != nil || r < least {
			return nil, fmt.Errorf("-ranks %q: %q is not a rank ≥ %d", list, field, least)
		}
		ranks = append(ranks, r)
	}
	return ranks, nil
}

// Scaling is a picture of cost against model width: each point is one variant at one width,
// its step time, gradient FLOPs and ops as ratios to stock's in the same run.
type Scaling struct {
	Title  string         `json:"title"`
	Points []ScalingPoint `json:"points"`
}

// ScalingPoint is one variant's run at one width, against stock's (AdamW's) of the same run.
type ScalingPoint struct {
	Width         int     `json:"width"`
	Series        string  `json:"series"` // e.g. "one option", "rank width/16"
	Rank          string  `json:"rank"`   // what the rank was: "16", "automatic: 16"
	StepRatio     float64 `json:"step_ratio"`
	GradientRatio float64 `json:"gradient_flops_ratio"`
	Ops           int     `json:"ops_per_step"`
	ScalarOps     int     `json:"scalar_ops_per_step"`
	StockOps      int     `json:"stock_ops_per_step"`
	StateBytes    int64   `json:"optimizer_state_bytes"`
	StockState    int64   `json:"stock_optimizer_state_bytes"`
}

// Write writes the scaling data to path as JSON.
func (s Scaling) Write(path string) error { return writeJSON(path, s) }

// ReadScaling reads scaling data written by Scaling.Write.
func ReadScaling(path string) (Scaling, error) {
	s, err := readJSON[Scaling](path, "a scaling run's")
	if err == nil && len(s.Points) == 0 {
		err = fmt.Errorf("%s holds no points to draw", path)
	}
	return s, err
}

// SeriesNames are the series in first-seen order.
func (s Scaling) SeriesNames() []string {
	var names []string
	for _, p := range s.Points {
		if !slices.Contains(names, p.Series) {
			names = append(names, p.Series)
		}
	}
	return names
}

// Table renders the points as a markdown table, by width then series.
func (s Scaling) Table() string {
	points := slices.Clone(s.Points)
	order := s.SeriesNames()
	sort.SliceStable(points, func(i, j int) bool {
		if points[i].Width != points[j].Width {
			return points[i].Width < points[j].Width
		}
		return slices.Index(order, points[i].Series) < slices.Index(order, points[j].Series)
	})
	var b strings.Builder
	b.WriteString("| width | variant | rank | step time | gradient FLOPs | ops a step (scalar); AdamW's | optimizer state: AdamW's → this |\n|---|---|---|---|---|---|---|\n")
	for _, p := range points {
		fmt.Fprintf(&b, "| %d | %s | %s | %.2f | %.2f | %d (%d), %d | %s → %s |\n", p.Width, p.Series, p.Rank, p.StepRatio, p.GradientRatio,
			p.Ops, p.ScalarOps, p.StockOps, mib(p.StockState), mib(p.StateBytes))
	}
	return b.String()
}

func mib(bytes int64) string { return fmt.Sprintf("%.1f MiB", float64(bytes)/(1<<20)) }
