package projector

import (
	"math"
	"math/rand/v2"
)

// Host-side random matrices, built once when the graph is: a start basis, the residual sketch.

// RandomOrthonormal is a fixed pseudo-random orthonormal [rows, r] matrix (seeded by its shape
// and seed), computed on the host in float64 by Gram–Schmidt applied twice: a basis to start
// tracking from before any gradient was seen.
func RandomOrthonormal(rows, r int, seed uint64) [][]float64 {
	rng := rand.New(rand.NewPCG(uint64(rows)<<20^uint64(r), seed))
	cols := make([][]float64, r) // column-major while building
	for j := range cols {
		for {
			c := make([]float64, rows)
			for i := range c {
				c[i] = rng.NormFloat64()
			}
			for range 2 {
				for _, prev := range cols[:j] {
					var dot float64
					for i := range c {
						dot += c[i] * prev[i]
					}
					for i := range c {
						c[i] -= dot * prev[i]
					}
				}
			}
			var norm float64
			for _, v := range c {
				norm += v * v
			}
			if norm = math.Sqrt(norm); norm > 1e-6 {
				for i := range c {
					c[i] /= norm
				}
				cols[j] = c
				break
			}
		}
	}
	return transposedHost(cols, rows)
}

// Sketch is a fixed pseudo-random Gaussian [rows, s] matrix for SketchResidual's sketch.
func Sketch(rows, s int) [][]float64 { return gaussianSketch(rows, s) }

// SketchRows is Sketch(rows, s) transposed, [s, rows]: DirectStep's form of it.
func SketchRows(rows, s int) [][]float64 { return transposedHost(Sketch(rows, s), s) }

// transposedHost returns the transpose of a host matrix m whose rows have b entries ([a][b] →
// [b][a]; b given, so that an empty m has one).
func transposedHost(m [][]float64, b int) [][]float64 {
	out := make([][]float64, b)
	for j := range out {
		out[j] = make([]float64, len(m))
		for i := range m {
			out[j][i] = m[i][j]
		}
	}
	return out
}
