// Package figures is the data of the examples' pictures: the drift controller's (the examples
// write it as JSON, and examples/plot draws it, internal/plots) and the frontier of quality
// against step time. The examples themselves then do
// not compile a plotting library, which is a sixth of a fresh build of the first command.
package figures

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
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
func (c Controller) Write(path string) error {
	data, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

// Read reads a figure written by Write.
func Read(path string) (Controller, error) {
	var c Controller
	data, err := os.ReadFile(path)
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return c, fmt.Errorf("%s is not a controller figure's data: %w", path, err)
	}
	if len(c.Series) == 0 {
		return c, fmt.Errorf("%s holds no series to draw", path)
	}
	return c, nil
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
func (f Frontier) Write(path string) error {
	data, err := json.Marshal(f)
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

// ReadFrontier reads a frontier written by Frontier.Write.
func ReadFrontier(path string) (Frontier, error) {
	var f Frontier
	data, err := os.ReadFile(path)
	if err != nil {
		return f, err
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return f, fmt.Errorf("%s is not a frontier's data: %w", path, err)
	}
	if len(f.Series) == 0 {
		return f, fmt.Errorf("%s holds no series to draw", path)
	}
	return f, nil
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
