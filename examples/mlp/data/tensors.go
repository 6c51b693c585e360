package data

import "github.com/gomlx/gomlx/core/tensors"

// Tensors returns the features as a float32 tensor [samples, features] and the labels as a
// float32 tensor [samples, 1] (0 or 1), the shapes a binary-logit GoMLX model trains on. Each
// call returns fresh tensors: a GoMLX trainer takes ownership of the batches it is given.
func (d *Dataset) Tensors() (x, y *tensors.Tensor) {
	n, f := d.NumSamples(), d.NumFeatures()
	xs := make([]float32, 0, n*f)
	ys := make([]float32, 0, n)
	for i, row := range d.X {
		for _, v := range row {
			xs = append(xs, float32(v))
		}
		ys = append(ys, float32(d.Y[i]))
	}
	return tensors.FromFlatDataAndDimensions(xs, n, f), tensors.FromFlatDataAndDimensions(ys, n, 1)
}
