package projector

import (
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gradsub/gradsub/internal/upstream"
)

// Orthonormalize returns an orthonormal basis of the columns of a ([m, k], k small) by classical
// Gram–Schmidt applied twice per column (CGS2). One pass of Gram–Schmidt, or Cholesky-QR, loses
// orthogonality on ill-conditioned input in float32; the second pass restores it to rounding level.
//
// A column whose remaining norm is below tol times the largest input column norm — a zero or
// linearly dependent column — comes out as zeros rather than NaN, so callers can mask it.
func Orthonormalize(a *Node, tol float64) *Node {
	if a.Rank() != 2 {
		panicf("Orthonormalize: want a matrix [m, k], got shape %s", a.Shape())
	}
	k := a.Shape().Dim(1)
	colMax := ReduceAndKeep(Abs(a), ReduceMax, 0)
	colNorms := Mul(colMax, Sqrt(ReduceAndKeep(Square(Div(a, SafeDivisor(colMax))), ReduceSum, 0)))
	threshold := MulScalar(ReduceAllMax(colNorms), tol)
	cols := make([]*Node, 0, k)
	for j := range k {
		v := Slice(a, AxisRange(), AxisElem(j)) // [m, 1]
		if j > 0 {
			q := Concatenate(cols, 1) // [m, j]
			for range 2 {
				v = Sub(v, DotProduct(q, DotProduct(Transpose(q, 0, 1), v)))
			}
		}
		// Scale by the largest entry before squaring: a column of 1e-20s has squares in float32's
		// denormal range, where the norm loses digits and the "unit" column would not be.
		vMax := ReduceAllMax(Abs(v))
		u := Div(v, SafeDivisor(vMax))
		uNorm := Sqrt(ReduceAllSum(Square(u)))
		keep := GreaterThan(Mul(vMax, uNorm), threshold)
		cols = append(cols, Where(keep, Div(u, SafeDivisor(uNorm)), upstream.ZeroOf(v)))
	}
	return Concatenate(cols, 1)
}

// SafeDivisor replaces zeros (and negatives) by ones, so that dividing by a length never makes NaN.
func SafeDivisor(x *Node) *Node {
	return Where(upstream.Positive(x), x, upstream.OneOf(x))
}

// OrthonormalityError is max |QᵀQ − D|, where D is the identity restricted to Q's present columns,
// those of squared length above ½ (zero columns are masked-out directions, not a loss of
// orthonormality; a column of any other length is counted against it, however short).
func OrthonormalityError(q *Node) *Node {
	k := q.Shape().Dim(1)
	qtq := DotProduct(Transpose(q, 0, 1), q)
	present := ConvertDType(GreaterThan(ReduceSum(Square(q), 0), Scalar(q.Graph(), q.DType(), 0.5)), q.DType())
	want := Mul(DiagonalWithValue(ScalarOne(q.Graph(), q.DType()), k), InsertAxes(present, 0))
	return ReduceAllMax(Abs(Sub(qtq, want)))
}

// AtMostOne clips a share above 1 (float32 rounding) to 1; NaN stays NaN, for the checks that look
// for it.
func AtMostOne(x *Node) *Node { return Where(GreaterThan(x, upstream.OneOf(x)), upstream.OneOf(x), x) }

// RelativeLength is ‖a‖/‖b‖ (Frobenius norms), 0 where b is zero: the relative residual of a
// gradient b whose part outside a subspace is a.
func RelativeLength(a, b *Node) *Node {
	aLen, bLen := Sqrt(ReduceAllSum(Square(a))), Sqrt(ReduceAllSum(Square(b)))
	positive := upstream.Positive(bLen)
	return Where(positive, Div(aLen, SafeDivisor(bLen)), upstream.ZeroOf(bLen))
}
