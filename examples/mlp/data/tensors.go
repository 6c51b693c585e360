package data

import "github.com/gomlx/gomlx/core/tensors"

// Flat is a dataset converted once to float32, ready to be copied into tensors at every step.
type Flat struct {
	X, Y              []float32 // [samples·features] and [samples], row-major
	Samples, Features int
}

// Flat converts the dataset to float32 once: a full-batch loop then pays one copy per step,
// not a conversion of every row (which took 14% of the MLP table's run).
func (d *Dataset) Flat() Flat {
	n, f := d.NumSamples(), d.NumFeatures()
	fl := Flat{X: make([]float32, 0, n*f), Y: make([]float32, 0, n), Samples: n, Features: f}
	for i, row := range d.X {
		for _, v := range row {
			fl.X = append(fl.X, float32(v))
		}
		fl.Y = append(fl.Y, float32(d.Y[i]))
	}
	return fl
}

// Tensors returns the features as a float32 tensor [samples, features] and the labels as a
// float32 tensor [samples, 1] (0 or 1), the shapes a binary-logit GoMLX model trains on. Each
// call returns fresh tensors: a GoMLX trainer takes ownership of the batches it is given.
func (fl Flat) Tensors() (x, y *tensors.Tensor) {
	return tensors.FromFlatDataAndDimensions(fl.X, fl.Samples, fl.Features), tensors.FromFlatDataAndDimensions(fl.Y, fl.Samples, 1)
}

// Tensors is d.Flat().Tensors().
func (d *Dataset) Tensors() (x, y *tensors.Tensor) { return d.Flat().Tensors() }
