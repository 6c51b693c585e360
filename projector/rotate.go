package projector

import (
	. "github.com/gomlx/gomlx/core/graph"

	"github.com/gradsub/gradsub/internal/upstream"
)

// Rotations is R = Q_nextᵀ·Q_old for each basis of two stacks [g, rows, r]: [g, r, r], in one
// product (RotateCoefficientsStack's rotation).
func Rotations(next, old *Node) *Node { return transposedTimesStack(next, old) }

// RotateCoefficientsStack is RotateCoefficients for a stack of g matrices' state ([g, r, n]
// Left, [g, m, r] Right) and their rotations ([g, r, r]), in a few ops for the stack.
func RotateCoefficientsStack(c, rotation *Node, side Side, squared bool) *Node {
	rotate := func(r *Node) *Node {
		if side == Left {
			return timesStack(r, c) // R·c
		}
		return DotGeneral(c, []int{2}, []int{0}, r, []int{2}, []int{0}) // c·Rᵀ
	}
	if !squared {
		return rotate(rotation)
	}
	sq := Square(rotation)
	inSpan := ReduceSum(sq, 2) // [g, r_new]
	outside := Max(OneMinus(inSpan), upstream.ZeroOf(inSpan))
	if side == Left {
		return Add(rotate(sq), Mul(ExpandAxes(outside, 2), ReduceAndKeep(c, ReduceMean, 1)))
	}
	return Add(rotate(sq), Mul(ExpandAxes(outside, 1), ReduceAndKeep(c, ReduceMean, 2)))
}

// RotateCoefficients maps coefficient-shaped state from an old basis to a new one: with
// R = Q_newᵀ·Q_old, c ← R·c (Left, c [r, n]) or c ← c·Rᵀ (Right, c [m, r]). For a first moment
// (an average of coefficients) this is exact: the lifted moment is projected on the new
// subspace. squared rotates a second moment (an average of squared coefficients): the part of
// each new axis inside the old span takes R∘R of the old moments (exact where the old
// coordinates are uncorrelated), the part outside it (1 − Σⱼ Rᵢⱼ²) the old coordinates' mean.
// Without that part a new axis's moment shrank to its share of the old span, while its
// gradient did not, and Adam's steps along it grew: loss spikes at high learning rates
// (docs/log/2026-12-quality.md). The moment stays non-negative, an isotropic one stays as it is, and R = I
// leaves it unchanged.
func RotateCoefficients(c, rotation *Node, side Side, squared bool) *Node {
	if squared {
		sq := Square(rotation)
		inSpan := ReduceSum(sq, 1) // [r_new]: each new axis's share inside the old span
		outside := Max(OneMinus(inSpan), upstream.ZeroOf(inSpan))
		if side == Left {
			return Add(DotProduct(sq, c), Mul(ExpandAxes(outside, 1), ReduceAndKeep(c, ReduceMean, 0)))
		}
		return Add(TimesTransposed(c, sq), Mul(ExpandAxes(outside, 0), ReduceAndKeep(c, ReduceMean, 1)))
	}
	if side == Left {
		return DotProduct(rotation, c)
	}
	return TimesTransposed(c, rotation)
}

// KeepRows is x ([k, …]) with its rows where keep ([k], bool) is false set to zero, NaN and Inf
// included, as arithmetic: x times keep's 0/1 column, then every non-finite entry zeroed (a kept
// row's too). A Where whose condition has a lower rank than its operands, or is broadcast to
// theirs, takes the Go backend's generic path (about 40 ns an element, against 5 for a column
// multiply and a same-shaped Where, which take its vector kernels).
func KeepRows(x, keep *Node) *Node { return KeepRowsBy(x, KeepColumn(keep, x)) }

// KeepColumn is keep ([k], bool) as the 0/1 column KeepRowsBy scales x's rows by (x: [k, …],
// for its dtype and rank): made once, it serves every x of that dtype and rank.
func KeepColumn(keep, x *Node) *Node { return RowColumn(ConvertDType(keep, x.DType()), x.Rank()) }

// KeepRowsBy is KeepRows with its column made (KeepColumn).
func KeepRowsBy(x, column *Node) *Node { return ZeroNonFinite(Mul(x, column)) }

// ChooseRows is onTrue's rows where choose ([k], bool) holds and onFalse's elsewhere (both [k,
// …]; onFalse finite), as KeepRows does it.
func ChooseRows(choose, onTrue, onFalse *Node) *Node {
	m := RowColumn(ConvertDType(choose, onTrue.DType()), onTrue.Rank())
	return Add(ZeroNonFinite(Mul(onTrue, m)), Mul(onFalse, OneMinus(m)))
}

// ZeroNonFinite is x with its NaN and ±Inf entries zeroed.
func ZeroNonFinite(x *Node) *Node { return Where(IsFinite(x), x, upstream.ZeroOf(x)) }

// RowColumn reshapes v ([k]) to [k, 1, …, 1] of the given rank, to scale a stack's rows.
func RowColumn(v *Node, rank int) *Node {
	dims := make([]int, rank)
	for i := range dims {
		dims[i] = 1
	}
	dims[0] = v.Shape().Dim(0)
	return Reshape(v, dims...)
}
