package upstream

import (
	"fmt"
	"slices"
	"strings"

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

// ReshapeTo is Reshape(x, dims...), or x itself where it has those dimensions already; one op a
// graph for the same x and dims (Shared).
func ReshapeTo(x *Node, dims ...int) *Node {
	if slices.Equal(x.Shape().Dimensions, dims) {
		return x
	}
	return Shared(x.Graph(), fmt.Sprint("reshape", x.Id(), dims), func() *Node { return Reshape(x, dims...) })
}

// TransposeTo is TransposeAllAxes(x, perm...), or x itself where perm is the identity; one op a
// graph for the same x and perm (Shared).
func TransposeTo(x *Node, perm ...int) *Node {
	for i, a := range perm {
		if a != i {
			return Shared(x.Graph(), fmt.Sprint("transpose", x.Id(), perm), func() *Node { return TransposeAllAxes(x, perm...) })
		}
	}
	return x
}

// sharedKey keys a graph's shared nodes (Shared) in its attached state.
type sharedKey struct{}

// Shared returns the node built for key in g, building it (build) the first time: two rules
// that take the same view or concatenation of the same tensors (the query, key and value
// products reading one input) share one op. The Go backend runs every op it is given; XLA
// would merge them, but each is a launch until it does. key must say everything the node
// depends on (the operands' ids, the view's arguments).
func Shared(g *Graph, key string, build func() *Node) *Node {
	nodes, _ := g.State(sharedKey{}).(map[string]*Node)
	if nodes == nil {
		nodes = map[string]*Node{}
		g.AttachState(sharedKey{}, nodes)
	}
	if n, found := nodes[key]; found {
		return n
	}
	n := build()
	nodes[key] = n
	return n
}

// IDs is the ids of xs, for a Shared key.
func IDs(xs ...*Node) string {
	var b strings.Builder
	for _, x := range xs {
		fmt.Fprintf(&b, "%d,", x.Id())
	}
	return b.String()
}

// Positive is x > 0, one op for the graph however many rules ask it of x (Shared).
func Positive(x *Node) *Node {
	return Shared(x.Graph(), "positive:"+IDs(x), func() *Node { return GreaterThan(x, ZeroOf(x)) })
}
