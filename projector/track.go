package projector

import (
	"math"
	"math/rand/v2"

	. "github.com/gomlx/gomlx/core/graph"
)

// Streaming subspace tracking from the direct products.
//
// For a weight W ([m, n], y = x·W) with basis Q on the left, the coefficient C = Qᵀ·∂W =
// (x·Q)ᵀ·∂y is what the optimizer needs anyway. One power-iteration step of ∂W·∂Wᵀ on Q is
// ∂W·Cᵀ = xᵀ·(∂y·Cᵀ): two more skinny products, never ∂W. Each step moves Q towards that
// product (an Oja step) and re-orthonormalises it by a warm-started Newton–Schulz iteration, so
// the basis follows the dominant subspace of the recent gradients' covariance. A few random
// sketch columns ∂W·Ω ride in the same product and estimate the relative residual. The right
// side is the same with ∂Wᵀ. Nothing here branches: a fast or slow rate is a scalar.

// DefaultSketchColumns is the number of random columns of the residual sketch ∂W·Ω.
const DefaultSketchColumns = 2

// TrackingProducts are one step's products for tracking a basis.
type TrackingProducts struct {
	Power  *Node // A·Aᵀ·Q up to a positive scale, [rows, r]; A = ∂W (Left) or ∂Wᵀ (Right)
	Sketch *Node // A·Ω, [rows, s]: random combinations of A's columns
}

// DirectTrackingProducts computes, for y = x·W with x [B, m] and dy [B, n], the tracking products
// of a basis from its coefficient coef (Left: Qᵀ∂W [r, n]; Right: ∂W·Q [m, r]) without building
// ∂W: one product of the batch with [coefᵀ | Ω] and one with the result. omega is [n, s] (Left)
// or [m, s] (Right). The coefficient is scaled to unit max-magnitude first, so that a huge but
// finite gradient does not overflow the product (the power product's scale carries no meaning).
func DirectTrackingProducts(x, dy, coef, omega *Node, side Side) TrackingProducts {
	r := coef.Shape().Dim(0)
	if side == Left {
		// [r+s, n]: rows of Cᵀ's transpose and of Ωᵀ; dy·[Cᵀ | Ω] = dy·thatᵀ.
		right := Concatenate([]*Node{unitMax(coef), Transpose(omega, 0, 1)}, 0)
		z := TimesTransposed(dy, right) // [B, r+s]
		return splitTracking(TransposedTimes(x, z), r)
	}
	r = coef.Shape().Dim(1)
	z := DotProduct(x, Concatenate([]*Node{unitMax(coef), omega}, 1)) // [B, r+s]
	return splitTracking(TransposedTimes(dy, z), r)
}

// FullTrackingProducts computes the same products from a full gradient grad ([m, n]), for
// weights whose gradient is built anyway (the post-hoc path).
func FullTrackingProducts(grad, coef, omega *Node, side Side) TrackingProducts {
	if side == Left {
		r := coef.Shape().Dim(0)
		right := Concatenate([]*Node{unitMax(coef), Transpose(omega, 0, 1)}, 0) // [r+s, n]
		return splitTracking(TimesTransposed(grad, right), r)
	}
	r := coef.Shape().Dim(1)
	return splitTracking(TransposedTimes(grad, Concatenate([]*Node{unitMax(coef), omega}, 1)), r)
}

func splitTracking(p *Node, r int) TrackingProducts {
	cols := p.Shape().Dim(1)
	return TrackingProducts{
		Power:  Slice(p, AxisRange(), AxisRange(0, r)),
		Sketch: Slice(p, AxisRange(), AxisRange(r, cols)),
	}
}

// unitMax divides x by its largest magnitude (zeros stay zeros).
func unitMax(x *Node) *Node { return Div(x, SafeDivisor(ReduceAllMax(Abs(x)))) }

// SketchResidual estimates the relative residual ‖A − QQᵀA‖/‖A‖ from the sketch A·Ω: the same
// ratio on the sketch's columns (0 for a zero sketch).
func SketchResidual(basis, sketch *Node) *Node {
	s := unitMax(sketch)
	return RelativeLength(Sub(s, DotProduct(basis, TransposedTimes(basis, s))), s)
}

// TrackBasis moves an orthonormal basis q ([rows, r]) towards its power product ([rows, r],
// A·Aᵀ·q up to scale) at rate (scalar ≥ 0, at most maxRate) and returns the new orthonormal
// basis: the polar factor of q + rate·P̂, P̂ = power/‖power‖_F, by Newton–Schulz.
//
// Because qᵀ·power = (Aᵀq)ᵀ(Aᵀq) is positive semi-definite, every singular value of q + rate·P̂
// lies in [1, 1+rate]: the iteration starts well conditioned whatever the gradient (zero, of
// rank below r, or huge), and NewtonSchulzSteps(maxRate) iterations reach float32 rounding. A non-finite power product leaves q as it is.
func TrackBasis(q, power, rate *Node, maxRate float64) *Node {
	dt := q.DType()
	p := unitMax(power)
	p = Div(p, SafeDivisor(Sqrt(ReduceAllSum(Square(p)))))
	p = Where(IsFinite(ReduceAllSum(p)), p, ZerosLike(p))
	rate = ConvertDType(rate, dt)
	x := Div(Add(q, Mul(rate, p)), AddScalar(rate, 1))
	return NewtonSchulz(x, 1/(1+max(maxRate, 0)))
}

// NewtonSchulz orthonormalises x ([rows, r]), whose singular values lie in [lower, 1] with
// lower > 0, by the scaled cubic Newton–Schulz iteration X ← a·X·(3I − a²·XᵀX)/2: it converges
// to the polar factor of x, the orthonormal matrix nearest to it. Each step's scale a maps the
// current interval [l, 1] onto [l', 1] with the ends level (a² = 3/(1+l+l²)), which needs about
// half the steps of the unscaled iteration from a small lower; the schedule is computed on the
// host (NewtonSchulzSchedule), so the graph has a fixed number of products and no branch.
func NewtonSchulz(x *Node, lower float64) *Node {
	for _, a := range NewtonSchulzSchedule(lower) {
		gram := TransposedTimes(x, x) // [r, r]
		x = Sub(MulScalar(x, 1.5*a), MulScalar(DotProduct(x, gram), 0.5*a*a*a))
	}
	return x
}

// NewtonSchulzSchedule is the scale of each NewtonSchulz step for singular values in
// [lower, 1], until they are within 1e-7 of 1 (at most 32 steps).
func NewtonSchulzSchedule(lower float64) []float64 {
	l := min(max(lower, 1e-6), 1)
	var scales []float64
	for 1-l > 1e-7 && len(scales) < 32 {
		a := math.Sqrt(3 / (1 + l + l*l))
		scales = append(scales, a)
		l = 1.5*a - 0.5*a*a*a
	}
	return scales
}

// NewtonSchulzSteps is the number of products pairs TrackBasis runs at most rate maxRate.
func NewtonSchulzSteps(maxRate float64) int {
	return len(NewtonSchulzSchedule(1 / (1 + max(maxRate, 0))))
}

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
	out := make([][]float64, rows)
	for i := range out {
		out[i] = make([]float64, r)
		for j := range r {
			out[i][j] = cols[j][i]
		}
	}
	return out
}

// Sketch is a fixed pseudo-random Gaussian [rows, s] matrix for SketchResidual's sketch.
func Sketch(rows, s int) [][]float64 { return gaussianSketch(rows, s) }

// RotateCoefficients maps coefficient-shaped state from an old basis to a new one: with
// R = Q_newᵀ·Q_old, c ← R·c (Left, c [r, n]) or c ← c·Rᵀ (Right, c [m, r]). For a first moment
// (an average of coefficients) this is exact: the lifted moment is projected on the new
// subspace. squared rotates a second moment (an average of squared coefficients) by R∘R instead,
// which is exact where the coefficients' coordinates are uncorrelated; it keeps the moment
// non-negative and leaves it unchanged when the basis does not move (R = I).
func RotateCoefficients(c, rotation *Node, side Side, squared bool) *Node {
	if squared {
		rotation = Square(rotation)
	}
	if side == Left {
		return DotProduct(rotation, c)
	}
	return TimesTransposed(c, rotation)
}
