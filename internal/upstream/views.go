package upstream

import (
	"slices"

	. "github.com/gomlx/gomlx/core/graph"
)

// GoMLX builds ZerosLike and OnesLike as a broadcast op, also where the consumer (Where, a
// comparison, Max) broadcasts a scalar itself, and builds a Reshape to a node's own shape and an
// identity TransposeAllAxes as ops: each is an op every step, and the Go backend copies a
// reshape's or a transpose's input it does not own (a [1024, 1024] weight: 0.28 ms). These build
// nothing where nothing is needed.

// ZeroOf is 0 of x's dtype as a scalar constant, for ops that broadcast a scalar operand.
func ZeroOf(x *Node) *Node { return ScalarZero(x.Graph(), x.DType()) }

// OneOf is 1 of x's dtype as a scalar constant, for ops that broadcast a scalar operand.
func OneOf(x *Node) *Node { return ScalarOne(x.Graph(), x.DType()) }

// ReshapeTo is Reshape(x, dims...), or x itself where it has those dimensions already.
func ReshapeTo(x *Node, dims ...int) *Node {
	if slices.Equal(x.Shape().Dimensions, dims) {
		return x
	}
	return Reshape(x, dims...)
}

// TransposeTo is TransposeAllAxes(x, perm...), or x itself where perm is the identity.
func TransposeTo(x *Node, perm ...int) *Node {
	for i, a := range perm {
		if a != i {
			return TransposeAllAxes(x, perm...)
		}
	}
	return x
}
