// Package plots draws the examples' pictures of the drift controller.
package plots

import (
	"fmt"
	"image/color"
	"os"

	"github.com/gradsub/gradsub/hooks"
	"github.com/gradsub/gradsub/internal/figures"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

var palette = []color.Color{
	color.RGBA{R: 31, G: 119, B: 180, A: 255}, color.RGBA{R: 214, G: 39, B: 40, A: 255},
	color.RGBA{R: 44, G: 160, B: 44, A: 255}, color.RGBA{R: 148, G: 103, B: 189, A: 255},
	color.RGBA{R: 255, G: 127, B: 14, A: 255}, color.RGBA{R: 140, G: 86, B: 75, A: 255},
}

// Controller writes a PNG of three aligned panels against the step: the training loss (smoothed
// over 10 steps), the largest relative residual at each drift check with the refreshes marked,
// and the mean rank of the projected variables. threshold is drawn on the residual panel.
func Controller(path string, fig figures.Controller) error {
	title, series, threshold := fig.Title, fig.Series, fig.Threshold
	loss, resid, rank := plot.New(), plot.New(), plot.New()
	loss.Title.Text = title
	loss.Y.Label.Text = "loss (10-step mean)"
	resid.Y.Label.Text = "residual at checks"
	resid.Y.Min, resid.Y.Max = 0, 1
	rank.Y.Label.Text = "mean rank"
	rank.X.Label.Text = "step"
	rank.Y.Min = 0
	loss.Legend.Top = true
	steps := 1
	for i, s := range series {
		c := palette[i%len(palette)]
		steps = max(steps, len(s.Loss))
		if err := addLine(loss, smooth(s.Loss, 10), c, s.Name); err != nil {
			return err
		}
		if err := addHistory(resid, rank, s.History, c, i == 0); err != nil {
			return err
		}
	}
	if threshold > 0 && threshold < 1 {
		th, err := plotter.NewLine(plotter.XYs{{X: 0, Y: threshold}, {X: float64(steps), Y: threshold}})
		if err != nil {
			return err
		}
		th.Dashes = []vg.Length{vg.Points(4), vg.Points(4)}
		resid.Add(th)
		resid.Legend.Add("residual threshold", th)
	}
	for _, p := range []*plot.Plot{loss, resid, rank} {
		p.X.Min, p.X.Max = 0, float64(steps)
	}
	rank.Y.Max = max(rank.Y.Max*1.2, 1)

	return writeStacked(path, loss, resid, rank)
}

func addLine(p *plot.Plot, xy plotter.XYs, c color.Color, name string) error {
	if len(xy) == 0 {
		return nil
	}
	line, err := plotter.NewLine(xy)
	if err != nil {
		return err
	}
	line.Color, line.Width = c, vg.Points(1.2)
	p.Add(line)
	if name != "" {
		p.Legend.Add(name, line)
	}
	return nil
}

// smooth returns the running mean of values over window steps, against the step (1-based).
func smooth(values []float64, window int) plotter.XYs {
	out := make(plotter.XYs, len(values))
	var sum float64
	for i, v := range values {
		sum += v
		if i >= window {
			sum -= values[i-window]
		}
		out[i] = plotter.XY{X: float64(i + 1), Y: sum / float64(min(i+1, window))}
	}
	return out
}

// Frontier writes a PNG of the frontier: eval loss against step time, both as ratios to stock's,
// a line per series through its ranks (each point labelled with its rank), and stock's point
// (1, 1) marked by dashed lines. Lower and further left is better.
func Frontier(path string, fig figures.Frontier) error {
	p := plot.New()
	p.Title.Text = fig.Title
	p.X.Label.Text = "step time / stock's"
	p.Y.Label.Text = "eval loss / stock's"
	p.Legend.Top = false // bottom right: the cheap, good corner is bottom left
	twoDecimals := plot.TickerFunc(func(min, max float64) []plot.Tick {
		ticks := plot.DefaultTicks{}.Ticks(min, max)
		for i := range ticks {
			if ticks[i].Label != "" {
				ticks[i].Label = fmt.Sprintf("%.2f", ticks[i].Value)
			}
		}
		return ticks
	})
	p.X.Tick.Marker, p.Y.Tick.Marker = twoDecimals, twoDecimals
	for i, s := range fig.Series {
		var xys plotter.XYs
		var labels []string
		for _, pt := range s.Points {
			xys = append(xys, plotter.XY{X: pt.StepRatio, Y: pt.LossRatio})
			labels = append(labels, fmt.Sprint(pt.Rank))
		}
		if len(xys) == 0 {
			continue
		}
		c := palette[i%len(palette)]
		line, points, err := plotter.NewLinePoints(xys)
		if err != nil {
			return err
		}
		line.Color, points.Color = c, c
		points.Shape = draw.CircleGlyph{}
		lab, err := plotter.NewLabels(plotter.XYLabels{XYs: xys, Labels: labels})
		if err != nil {
			return err
		}
		for j := range lab.TextStyle {
			lab.TextStyle[j].Color = c
			lab.TextStyle[j].XAlign = draw.XLeft
		}
		lab.Offset = vg.Point{X: vg.Points(3), Y: vg.Points(3)}
		p.Add(line, points, lab)
		p.Legend.Add(s.Name, line, points)
	}
	xmin, xmax, ymin, ymax := p.X.Min, p.X.Max, p.Y.Min, p.Y.Max
	p.X.Max = max(xmax, 1) + 0.3*(max(xmax, 1)-min(xmin, 1)) // room on the right for the legend
	for _, ref := range []plotter.XYs{{{X: 1, Y: min(ymin, 1)}, {X: 1, Y: max(ymax, 1)}}, {{X: min(xmin, 1), Y: 1}, {X: max(xmax, 1), Y: 1}}} {
		l, err := plotter.NewLine(ref)
		if err != nil {
			return err
		}
		l.Color = color.Gray{Y: 128}
		l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		p.Add(l)
	}
	return p.Save(7*vg.Inch, 5*vg.Inch, path)
}

// addHistory draws a series' controller history: its residual at checks (circles, joined),
// its refreshes after warm-up (crosses; in the legend once, with first) and its mean rank.
func addHistory(resid, rank *plot.Plot, history []hooks.Sample, c color.Color, first bool) error {
	var checks, refreshes, ranks plotter.XYs
	warmUpDone := false
	for _, h := range history {
		if h.Checked {
			checks = append(checks, plotter.XY{X: float64(h.Step), Y: h.Residual})
			warmUpDone = true
		}
		if h.Learned && warmUpDone {
			refreshes = append(refreshes, plotter.XY{X: float64(h.Step), Y: h.Residual})
		}
		ranks = append(ranks, plotter.XY{X: float64(h.Step), Y: h.MeanRank})
	}
	if len(checks) > 0 {
		line, points, err := plotter.NewLinePoints(checks)
		if err != nil {
			return err
		}
		line.Color, points.Color, points.Shape = c, c, draw.CircleGlyph{}
		resid.Add(line, points)
	}
	if len(refreshes) > 0 {
		marks, err := plotter.NewScatter(refreshes)
		if err != nil {
			return err
		}
		marks.Color, marks.Shape, marks.Radius = c, draw.CrossGlyph{}, vg.Points(5)
		resid.Add(marks)
		if first {
			resid.Legend.Add("refresh (×)", marks)
		}
	}
	if len(ranks) > 0 {
		return addLine(rank, ranks, c, "")
	}
	return nil
}

// writeStacked draws the three panels one above the other and writes them as a PNG to path.
func writeStacked(path string, loss, resid, rank *plot.Plot) error {
	const width, height = 8 * vg.Inch, 9 * vg.Inch
	img := vgimg.New(width, height)
	canvases := plot.Align([][]*plot.Plot{{loss}, {resid}, {rank}},
		draw.Tiles{Rows: 3, Cols: 1, PadY: vg.Points(6), PadX: vg.Points(4), PadTop: vg.Points(4), PadBottom: vg.Points(4)},
		draw.New(img))
	loss.Draw(canvases[0][0])
	resid.Draw(canvases[1][0])
	rank.Draw(canvases[2][0])
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return f.Close()
}
