package plots

import (
	"fmt"

	"github.com/gradsub/gradsub/internal/figures"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Scaling writes a PNG of cost against model width: for each series (a variant), its step time
// (solid) and gradient FLOPs (dashed) as ratios to stock's, a point per width. Lower is cheaper;
// a line that stays level means the saving holds as the model grows.
func Scaling(path string, fig figures.Scaling) error {
	p := plot.New()
	p.Title.Text = fig.Title
	p.X.Label.Text = "model width"
	p.Y.Label.Text = "against AdamW's (1 = stock)"
	p.X.Scale = plot.LogScale{}
	var widths []plot.Tick
	seen := map[int]bool{}
	for _, pt := range fig.Points {
		if !seen[pt.Width] {
			seen[pt.Width] = true
			widths = append(widths, plot.Tick{Value: float64(pt.Width), Label: fmt.Sprint(pt.Width)})
		}
	}
	if len(widths) == 0 {
		return fmt.Errorf("plots.Scaling: no points to draw")
	}
	p.X.Tick.Marker = plot.ConstantTicks(widths)
	lo, hi := widths[0].Value, widths[0].Value
	for _, w := range widths {
		lo, hi = min(lo, w.Value), max(hi, w.Value)
	}
	p.Y.Min, p.Y.Max = 0, 1.2
	for i, name := range fig.SeriesNames() {
		var step, grad plotter.XYs
		for _, pt := range fig.Points {
			if pt.Series == name {
				step = append(step, plotter.XY{X: float64(pt.Width), Y: pt.StepRatio})
				grad = append(grad, plotter.XY{X: float64(pt.Width), Y: pt.GradientRatio})
			}
		}
		c := palette[i%len(palette)]
		for k, xys := range []plotter.XYs{step, grad} {
			line, points, err := plotter.NewLinePoints(xys)
			if err != nil {
				return err
			}
			line.Color, points.Color = c, c
			points.Shape = draw.CircleGlyph{}
			what := "step time"
			if k == 1 {
				line.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
				points.Shape = draw.SquareGlyph{}
				what = "gradient FLOPs"
			}
			p.Add(line, points)
			p.Legend.Add(name+": "+what, line, points)
		}
	}
	stock, err := plotter.NewLine(plotter.XYs{{X: lo, Y: 1}, {X: hi, Y: 1}})
	if err != nil {
		return err
	}
	stock.Dashes = []vg.Length{vg.Points(2), vg.Points(2)}
	p.Add(stock)
	p.Legend.Top = false
	return p.Save(7*vg.Inch, 5*vg.Inch, path)
}
