package projector

import (
	"fmt"
	"math"
	"slices"

	"github.com/gomlx/gomlx/support/exceptions"

	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gradsub/gradsub/internal/upstream"
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

// DefaultSketchColumns is the fewest random columns of the residual sketch ∂W·Ω.
const DefaultSketchColumns = 2

// SketchColumns is the number of sketch columns used with a basis of rank r: at least
// DefaultSketchColumns, and as many more as make r + s a multiple of ProductTile, the width of
// [Cᵀ | Ω] in the tracking products. The extra columns sharpen the residual estimate for free:
// the Go backend's product kernels work in tiles of 4 rows, and a width of 10 (rank 8 and 2
// columns) made each tracking product 4 to 30 times slower than a width of 12.
func SketchColumns(r int) int {
	s := DefaultSketchColumns
	if rem := (r + s) % ProductTile; rem != 0 {
		s += ProductTile - rem
	}
	return s
}

// TrackingProducts are one step's products for tracking a basis.
type TrackingProducts struct {
	Power  *Node // A·Aᵀ·Q up to a positive scale, [rows, r]; A = ∂W (Left) or ∂Wᵀ (Right)
	Sketch *Node // A·Ω, [rows, s]: random combinations of A's columns
}

// DirectStep computes, for y = x·W with x [B, m] and dy [B, n] (leading axes flattened into B),
// the coefficient of ∂W in basis (DirectCoefficients) and the tracking products of the basis
// from the leading trackRows rows of the batch (all of them when trackRows ≥ B): a power
// iteration needs only an estimate of ∂W·∂Wᵀ, and its two skinny products over the whole batch
// would cost as much as the coefficient itself. The coefficient of those rows is taken from the
// same x·Q (or ∂y·Q), so the power product stays A·Aᵀ·Q for one A (positive semi-definite
// against Q, which TrackBasis relies on). omegaRows is the sketch Ω transposed, [s, n] (Left) or
// [s, m] (Right), the form the products read (SketchRows makes it on the host, so that no step
// transposes a constant).
func DirectStep(x, dy, basis, omegaRows *Node, side Side, trackRows int) (coef *Node, tp TrackingProducts) {
	coef, _, tp = DirectStepWithComplement(x, dy, basis, nil, omegaRows, side, trackRows)
	return coef, tp
}

// DirectStepWithComplement is DirectStep with the complement's coefficient too: complement
// ([rows of the basis, s], ComplementDirections; nil: none) joins the basis in the coefficient's
// product, and its part of the product, compCoef (Left: Ωᵀ·∂W [s, n]; Right: ∂W·Ω [m, s]), is
// returned apart. The tracking products read the basis's part only.
func DirectStepWithComplement(x, dy, basis, complement, omegaRows *Node, side Side, trackRows int) (coef, compCoef *Node, tp TrackingProducts) {
	return DirectStepInSpan(x, dy, Span(basis, complement), basis.Shape().Dim(1), omegaRows, side, trackRows)
}

// Span is [Q | Ω], the basis and the complement's directions side by side (the basis where
// complement is nil): the coefficient's product and the lift both read it.
func Span(basis, complement *Node) *Node {
	if complement == nil {
		return basis
	}
	return Concatenate([]*Node{basis, complement}, 1)
}

// DirectStepInSpan is DirectStepWithComplement with [Q | Ω] given (Span), Q its first r columns.
func DirectStepInSpan(x, dy, full *Node, r int, omegaRows *Node, side Side, trackRows int) (coef, compCoef *Node, tp TrackingProducts) {
	k := min(max(trackRows, 1), x.Shape().Dim(0))
	complement := full.Shape().Dim(1) > r
	xHead, dyHead := SliceAlong(x, 0, 0, k), SliceAlong(dy, 0, 0, k)
	coef, headRows := directCoefficientsWithHeads(x, dy, xHead, dyHead, full, side, r)
	if complement {
		coef, compCoef = SplitComplement(coef, side, r)
	}
	return coef, compCoef, trackingFromRows(xHead, dyHead, headRows, omegaRows, side)
}

// SliceAlong keeps entries [from, to) of x along axis, as Slice does, by a gather of one window.
// The Go backend's Slice copies element by element (100 µs for 64 rows of 784 floats, 4% of a
// projected 784-256-10 step), its Gather in contiguous blocks (3 µs). XLA's CPU and GPU
// pipelines rewrite a gather of one window into a slice (GatherExpander's simple-gather mode).
func SliceAlong(x *Node, axis, from, to int) *Node {
	dims := x.Shape().Dimensions
	if from < 0 || to > dims[axis] || from >= to {
		exceptions.Panicf("projector.SliceAlong: [%d, %d) is not a non-empty range of axis %d of %s", from, to, axis, x.Shape())
	}
	if from == 0 && to == dims[axis] {
		return x
	}
	sizes := slices.Clone(dims)
	sizes[axis] = to - from
	offsets := make([]int, x.Rank())
	for i := range offsets {
		offsets[i] = i
	}
	return upstream.Shared(x.Graph(), fmt.Sprint("slice", x.Id(), axis, from, to), func() *Node {
		return BackendGather(x, Const(x.Graph(), []int32{int32(from)}), 0, offsets, nil, []int{axis}, sizes, true)
	})
}

// DirectTrackingProducts computes, for y = x·W with x [B, m] and dy [B, n], the tracking products
// of a basis from its coefficient coef (Left: Qᵀ∂W [r, n]; Right: ∂W·Q [m, r]) without building
// ∂W: one product of the batch with [coefᵀ | Ω] and one with the result. omega is [n, s] (Left)
// or [m, s] (Right). The coefficient is scaled to unit max-magnitude first, so that a huge but
// finite gradient does not overflow the product (the power product's scale carries no meaning).
//
// Both products are taken transposed (Left: zᵀ = [Cᵀ | Ω]ᵀ·∂yᵀ, [r+s, B], one product
// contracting both operands' last axis, then zᵀ·x, [r+s, m], transposed back; Right: the same
// with x and ∂y swapped). The Go backend runs a product with r+s output columns (52 at rank 48,
// 12 at rank 8: not a multiple of its 16-wide kernels) several times slower than one with r+s
// rows: the tracking products of a 256×256 layer over 256 rows at rank 48 took 93 against 196
// µs, those of the 784-256-10 layer 22 against 43 µs (best of three).
func DirectTrackingProducts(x, dy, coef, omega *Node, side Side) TrackingProducts {
	if side == Right {
		coef = Transpose(coef, 0, 1)
	}
	return trackingFromRows(x, dy, coef, Transpose(omega, 0, 1), side)
}

// trackingFromRows is DirectTrackingProducts with the coefficient and the sketch given as rows,
// [r, cols] (Right: (∂W·Q)ᵀ) and [s, cols], the form DirectStep's coefficient product yields:
// [Cᵀ | Ω]ᵀ is then a concatenation of rows, with no transpose (the coefficient's and the
// concatenation's were 10 and 14 µs on the 784-256-10 layer).
func trackingFromRows(x, dy, coefRows, omegaRows *Node, side Side) TrackingProducts {
	r := coefRows.Shape().Dim(0)
	cs := Concatenate([]*Node{UnitMax(coefRows), omegaRows}, 0) // [r+s, cols of a]
	a, b := dy, x                                               // z = a·csᵀ; the product zᵀ·b
	if side == Right {
		a, b = x, dy
	}
	zt := DotGeneral(cs, []int{1}, nil, a, []int{1}, nil) // [r+s, B]
	return SplitTracking(Transpose(tiledRowsTimes(zt, b), 0, 1), r)
}

// FullTrackingProducts computes the same products from a full gradient grad ([m, n]), for
// weights whose gradient is built anyway (the post-hoc path).
func FullTrackingProducts(grad, coef, omega *Node, side Side) TrackingProducts {
	if side == Left {
		r := coef.Shape().Dim(0)
		right := Concatenate([]*Node{UnitMax(coef), Transpose(omega, 0, 1)}, 0) // [r+s, n]
		return SplitTracking(TimesSmallTransposed(grad, right), r)
	}
	r := coef.Shape().Dim(1)
	return SplitTracking(TransposedTimes(grad, Concatenate([]*Node{UnitMax(coef), omega}, 1)), r)
}

// SplitTracking splits the product of a gradient with [Cᵀ | Ω] (or [C | Ω]), [rows, r+s], into
// its power (the first r columns) and sketch parts (also for products computed outside this
// package: the projector's convolutions). The power part is taken by a gather of one window
// (SliceAlong), which the Go backend copies in rows of r values: its Slice, element by element,
// took 34 µs for [256, 48] of [256, 52] and 128 µs for [1024, 48] (a gather 5 and 11 µs). The
// sketch's few columns are cheaper to Slice.
func SplitTracking(p *Node, r int) TrackingProducts {
	cols := p.Shape().Dim(1)
	return TrackingProducts{
		Power:  SliceAlong(p, 1, 0, r),
		Sketch: Slice(p, AxisRange(), AxisRange(r, cols)),
	}
}

// UnitMax scales x to unit largest magnitude (zero stays zero): the coefficient is scaled so
// before it enters a tracking product, so that a huge but finite gradient does not overflow it.
// (The largest magnitude is floored at the dtype's smallest non-zero value, not selected against
// zero: an op fewer a matrix, and x/floor is x's zero where the magnitude is zero.)
func UnitMax(x *Node) *Node {
	return Div(x, Max(ReduceAllMax(Abs(x)), Const(x.Graph(), x.DType().SmallestNonZeroValueForDType())))
}

// The functions below take one basis ([rows, r]) or a stack of bases of one shape ([g, rows, r]):
// a model's bases of one shape are tracked in one batch of products, so that the per-step work
// is a few larger ops rather than many tiny ones (each op costs a kernel launch on an
// accelerator, and a fixed overhead on the Go backend).

// stacked views x as a stack [g, rows, cols] and returns the function that undoes the view.
func stacked(x *Node) (*Node, func(*Node) *Node) {
	if x.Rank() == 3 {
		return x, func(y *Node) *Node { return y }
	}
	return InsertAxes(x, 0), func(y *Node) *Node { return Squeeze(y, 0) }
}

// perMatrixMax and perMatrixSum reduce a stack [g, rows, cols] to [g, 1, 1].
func perMatrixMax(x *Node) *Node { return ReduceAndKeep(x, ReduceMax, 1, 2) }
func perMatrixSum(x *Node) *Node { return ReduceAndKeep(x, ReduceSum, 1, 2) }

// stackedUnitMax divides each matrix of a stack by its largest magnitude.
func stackedUnitMax(x *Node) *Node { return Div(x, SafeDivisor(perMatrixMax(Abs(x)))) }

// transposedTimesStack is aᵀ·b for each matrix of two stacks [g, k, m] and [g, k, n]: [g, m, n].
func transposedTimesStack(a, b *Node) *Node {
	return DotGeneral(a, []int{1}, []int{0}, b, []int{1}, []int{0})
}

// timesStack is a·b for each matrix of two stacks [g, m, k] and [g, k, n]: [g, m, n].
func timesStack(a, b *Node) *Node { return DotGeneral(a, []int{2}, []int{0}, b, []int{1}, []int{0}) }

// SketchResidual estimates the relative residual ‖A − QQᵀA‖/‖A‖ from the sketch A·Ω: the same
// ratio on the sketch's columns (0 for a zero sketch). For stacks ([g, rows, r] and
// [g, rows, s]) it returns one residual per matrix, [g].
func SketchResidual(basis, sketch *Node) *Node {
	q, _ := stacked(basis)
	sk, _ := stacked(sketch)
	sk = stackedUnitMax(sk)
	outside := Sub(sk, timesStack(q, transposedTimesStack(q, sk)))
	outLen, skLen := Sqrt(perMatrixSum(Square(outside))), Sqrt(perMatrixSum(Square(sk)))
	resid := Where(upstream.Positive(skLen), Div(outLen, SafeDivisor(skLen)), upstream.ZeroOf(skLen))
	resid = AtMostOne(resid) // a sketch wholly outside the basis can round to 1 + ulp
	resid = Reshape(resid, resid.Shape().Dim(0))
	if basis.Rank() == 2 {
		return Reshape(resid)
	}
	return resid
}

// TrackBasis moves an orthonormal basis q ([rows, r], or a stack [g, rows, r]) towards its power
// product (same shape, A·Aᵀ·q up to scale) at rate (scalar ≥ 0, at most maxRate) and returns the
// new orthonormal basis: the polar factor of q + rate·P̂, P̂ = power/‖power‖_F, by Newton–Schulz.
//
// Because qᵀ·power = (Aᵀq)ᵀ(Aᵀq) is positive semi-definite, every singular value of q + rate·P̂
// lies in [1, 1+rate]: the iteration starts well conditioned whatever the gradient (zero, of
// rank below r, or huge), and NewtonSchulzSteps(maxRate) iterations reach float32 rounding. A
// non-finite power product leaves its basis as it is.
func TrackBasis(q, power, rate *Node, maxRate float64) *Node {
	dt := q.DType()
	qs, unstack := stacked(q)
	p, _ := stacked(power)
	p = stackedUnitMax(p)
	p = Div(p, SafeDivisor(Sqrt(perMatrixSum(Square(p)))))
	// A non-finite power product leaves its basis as it is: its matrix's rate is zeroed, and its
	// non-finite entries (p − p is 0 exactly for the finite ones) are cleared so that the zero
	// rate holds. A select by the per-matrix verdict itself, [g, 1, 1] against [g, rows, r],
	// takes the Go backend's general broadcasting loop: 2.3 ms at [12, 256, 48], against 0.15
	// ms for these ops (docs/log/2026-12-benchmarks.md).
	finite := ConvertDType(IsFinite(perMatrixSum(p)), dt) // [g, 1, 1]: 1 or 0
	p = Where(Equal(Sub(p, p), upstream.ZeroOf(p)), p, upstream.ZeroOf(p))
	rate = Mul(ConvertDType(rate, dt), finite)
	x := Div(Add(qs, Mul(rate, p)), AddScalar(rate, 1))
	return unstack(NewtonSchulz(x, 1/(1+max(maxRate, 0))))
}

// NewtonSchulz orthonormalises x ([rows, r], or a stack [g, rows, r]), whose singular values lie
// in [lower, 1] with lower > 0, by the scaled cubic Newton–Schulz iteration
// X ← X·M, M = a·(3I − a²·XᵀX)/2: it converges to the polar factor of x, the orthonormal matrix
// nearest to it. Each step's scale a maps the current interval [l, 1] onto [l', 1] with the ends
// level (a² = 3/(1+l+l²)), which needs about half the steps of the unscaled iteration from a
// small lower; the schedule is computed on the host (NewtonSchulzSchedule), so the graph has a
// fixed number of products and no branch.
//
// The iteration runs on the r×r Gram matrix, not on x: each M is a polynomial in G = XᵀX, so
// the Ms commute, the Gram of X·M is M·G·M, and the result is X·T with T the product of the Ms.
// Only the Gram and that last product touch x's rows, where iterating on x took two such
// products a step (six steps at the fast tracking rate); the rest are r×r products.
//
// The Gram is taken as Xᵀ·(Xᵀ)ᵀ on the transposed stack [g, r, rows], which the Go backend
// runs 3–10 times faster than XᵀX on [g, rows, r] (docs/log/2026-12-benchmarks.md); the last product, X·T,
// contracts x's last axis and needs no transpose (T·Xᵀ and a transpose back took 1.4–1.7 ms
// at [12, 256, 48], X·T 0.9–1.1 ms).
func NewtonSchulz(x *Node, lower float64) *Node {
	schedule := NewtonSchulzSchedule(lower)
	if len(schedule) == 0 {
		return x
	}
	xs, unstack := stacked(x)
	g, r := xs.Shape().Dim(0), xs.Shape().Dim(2)
	xt := TransposeAllDims(xs, 0, 2, 1)                                // [g, r, rows]
	gram := DotGeneral(xt, []int{2}, []int{0}, xt, []int{2}, []int{0}) // XᵀX: [g, r, r]
	var t *Node
	for i, a := range schedule {
		m := Add(ConstAsDType(x.Graph(), x.DType(), scaledIdentities(g, r, 1.5*a)), MulScalar(gram, -0.5*a*a*a))
		if t == nil {
			t = m
		} else {
			t = timesStack(m, t)
		}
		if i < len(schedule)-1 {
			gram = timesStack(timesStack(m, gram), m)
		}
	}
	return unstack(timesStack(xs, t)) // X·T: T is symmetric, a polynomial in G
}

// scaledIdentities is a stack of g identity matrices [r, r] times scale, made on the host: a
// constant costs the step no op.
func scaledIdentities(g, r int, scale float64) [][][]float64 {
	stack := make([][][]float64, g)
	for i := range stack {
		stack[i] = make([][]float64, r)
		for j := range stack[i] {
			stack[i][j] = make([]float64, r)
			stack[i][j][j] = scale
		}
	}
	return stack
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
