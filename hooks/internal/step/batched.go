package step

import (
	"fmt"

	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gradsub/gradsub/internal/upstream"
	"github.com/gradsub/gradsub/projector"
)

// The step's per-variable reductions (is a gradient finite, how do two coefficient gradients
// agree) are batched: tensors that can be joined are concatenated and reduced in one op, as each
// op the compiler cannot fuse is a kernel launch on an accelerator and a dispatch on the CPU.
// GoMLX's Stack adds an op per operand (a reshape each); a Concatenate along the leading axis
// adds one for all.

// joinLimit bounds the tensors a reduction joins: a small tensor costs more to dispatch than to
// read, a large one is read once on its own rather than copied into a join.
const joinLimit = 1 << 16

// joinKey groups tensors that Concatenate can join along axis 0: same dtype and rank, same
// dimensions after the first.
func joinKey(x *Node) string {
	s := x.Shape()
	return fmt.Sprint(s.DType, s.Rank(), s.Dimensions[min(1, s.Rank()):])
}

// joinGroups splits xs into groups that joinKey allows to concatenate, in first-seen order (the
// graph is the same build after build); alone are scalars, and tensors over limit elements where
// limit > 0.
func joinGroups(xs []*Node, limit int) [][]int {
	return groupBy(len(xs), func(i int) string {
		if x := xs[i]; x.Rank() > 0 && (limit <= 0 || x.Shape().Size() <= limit) {
			return joinKey(x)
		}
		return "" // alone
	})
}

// groupBy splits the indices 0…n−1 into groups of equal key, in first-seen order (the graph is
// the same build after build); an index whose key is "" is a group alone.
func groupBy(n int, key func(i int) string) [][]int {
	var groups [][]int
	index := map[string]int{}
	for i := range n {
		k := key(i)
		if j, ok := index[k]; ok && k != "" {
			groups[j] = append(groups[j], i)
			continue
		}
		index[k] = len(groups)
		groups = append(groups, []int{i})
	}
	return groups
}

// matrixGroups splits matrices into the groups their key puts together (the step stacks each
// group's work), in first-seen order; with TrackEachAlone (tests) each matrix is alone.
func matrixGroups(ms []*matrixVar, key func(m *matrixVar) string) [][]*matrixVar {
	groups := groupBy(len(ms), func(i int) string {
		if TrackEachAlone {
			return ""
		}
		return key(ms[i])
	})
	out := make([][]*matrixVar, len(groups))
	for g, idx := range groups {
		for _, i := range idx {
			out[g] = append(out[g], ms[i])
		}
	}
	return out
}

// joined is the concatenation of xs[i] for i in group along axis 0 (xs[i] itself when alone).
func joined(xs []*Node, group []int) *Node {
	if len(group) == 1 {
		return xs[group[0]]
	}
	parts := make([]*Node, len(group))
	for j, i := range group {
		parts[j] = xs[i]
	}
	return concatenated(parts)
}

// concatenated is Concatenate(xs, 0), one op for the graph however many rules join the same
// tensors (the coefficient gradients: the base step's stack, the step-length and curvature
// rules, the gradient history).
func concatenated(xs []*Node) *Node {
	return upstream.Shared(xs[0].Graph(), "concat0:"+upstream.IDs(xs...), func() *Node { return Concatenate(xs, 0) })
}

// allFiniteBatched is allFinite over every tensor of xs (true for none), with the small ones
// joined: one product and one test per group instead of three ops per tensor. A joined group is
// judged by one sum of squares, so tensors each just under the overflow bound may overflow
// together: a step whose gradients are that large is skipped either way in practice (Adam's
// second moment of such a value is already near +Inf).
func allFiniteBatched(g *Graph, xs []*Node) *Node {
	var ok *Node
	for _, group := range joinGroups(xs, joinLimit) {
		if finite := allFinite(joined(xs, group)); ok == nil {
			ok = finite
		} else {
			ok = LogicalAnd(ok, finite)
		}
	}
	if ok == nil {
		return Const(g, true)
	}
	return ok
}

// stacked is xs (of one shape, at least rank 1) stacked along a new axis 0, as one Concatenate
// and one Reshape (GoMLX's Stack adds a reshape per operand).
func stacked(xs []*Node) *Node {
	dims := append([]int{len(xs)}, xs[0].Shape().Dimensions...)
	return upstream.ReshapeTo(concatenated(xs), dims...)
}

// unstacked undoes stacked: x's slices along axis 0, each without that axis, as one Reshape and
// a Slice each (GoMLX's Squeeze after a Slice would add one more per slice).
func unstacked(x *Node) []*Node {
	dims := x.Shape().Dimensions
	rows := dims[1]
	j := Reshape(x, append([]int{dims[0] * rows}, dims[2:]...)...)
	parts := make([]*Node, dims[0])
	for i := range parts {
		parts[i] = projector.SliceAlong(j, 0, i*rows, (i+1)*rows)
	}
	return parts
}

// flat is x as a vector (x itself when it is one).
func flat(x *Node) *Node {
	if x.Rank() == 1 {
		return x
	}
	return Reshape(x, x.Shape().Size())
}

// sameShapeGroups splits xs into groups of one shape, in first-seen order.
func sameShapeGroups(xs []*Node) [][]int {
	return groupBy(len(xs), func(i int) string { return xs[i].Shape().String() })
}

// rowsOf joins same-shaped tensors into the rows of one matrix, [len(group), size], in Float32
// where they are half precision.
func rowsOf(xs []*Node, group []int) *Node {
	x := joined(xs, group)
	if x.DType().IsHalfPrecision() {
		x = ConvertDType(x, dtypes.Float32)
	}
	return Reshape(x, len(group), xs[group[0]].Shape().Size())
}

// rowDots is the dot product of a's rows with b's, [rows]: one batched product.
func rowDots(a, b *Node) *Node { return DotGeneral(a, []int{1}, []int{0}, b, []int{1}, []int{0}) }
