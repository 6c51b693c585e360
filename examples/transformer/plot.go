package main

import (
	"image/color"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// plotLosses draws each variant's training loss (smoothed over 10 steps, solid) and evaluation
// loss (points, dashed) against the step.
func plotLosses(path string, rows []Row) error {
	p := plot.New()
	p.Title.Text = "Byte-level LM: loss by optimizer"
	p.X.Label.Text = "step"
	p.Y.Label.Text = "cross-entropy (nats/byte)"
	p.Legend.Top = true
	palette := []color.Color{
		color.RGBA{R: 31, G: 119, B: 180, A: 255}, color.RGBA{R: 255, G: 127, B: 14, A: 255},
		color.RGBA{R: 44, G: 160, B: 44, A: 255}, color.RGBA{R: 214, G: 39, B: 40, A: 255},
		color.RGBA{R: 148, G: 103, B: 189, A: 255}, color.RGBA{R: 140, G: 86, B: 75, A: 255},
	}
	for i, r := range rows {
		c := palette[i%len(palette)]
		train := make(plotter.XYs, len(r.TrainCurve))
		const window = 10
		var sum float64
		for j, l := range r.TrainCurve {
			sum += l
			if j >= window {
				sum -= r.TrainCurve[j-window]
			}
			train[j] = plotter.XY{X: float64(j + 1), Y: sum / float64(min(j+1, window))}
		}
		line, err := plotter.NewLine(train)
		if err != nil {
			return err
		}
		line.Color = c
		line.Width = vg.Points(1.2)
		p.Add(line)
		p.Legend.Add(r.Variant+" (train)", line)
		eval := make(plotter.XYs, len(r.EvalCurve))
		for j, l := range r.EvalCurve {
			eval[j] = plotter.XY{X: float64(r.EvalCurveSteps[j]), Y: l}
		}
		evalLine, points, err := plotter.NewLinePoints(eval)
		if err != nil {
			return err
		}
		evalLine.Color, evalLine.Dashes = c, []vg.Length{vg.Points(3), vg.Points(3)}
		points.Color, points.Shape = c, draw.CircleGlyph{}
		p.Add(evalLine, points)
		p.Legend.Add(r.Variant+" (eval)", evalLine, points)
	}
	// Early divergence (SGD's first steps) would flatten every curve: cap the view at the loss of
	// an untrained byte model (about ln 256 ≈ 5.5 nats) with a little headroom.
	p.Y.Max = math.Min(p.Y.Max, 6)
	return p.Save(8*vg.Inch, 5*vg.Inch, path)
}
