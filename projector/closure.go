package projector

import (
	"fmt"

	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gradsub/gradsub/internal/upstream"
)

// newIsolatedClosure is graph.NewClosure for closures built next to, or inside, other closures
// (the temporal eigen-solver's While), and records the closure's nodes as gated work run trips
// times each time it runs (the iteration count for a While body).
//
// GoMLX (v0.28) caches scalar constants per graph, not per function, so a scalar first created
// inside one closure would be handed out again to a sibling or nested closure, or to the main
// function afterwards ("uses a node from a different function scope"); and a main-function
// scalar used inside a closure is a capture, which only the Go backend supports. While fn runs,
// this helper empties the cache (fn's scalars are its own) and afterwards restores it as it was.
// It does the same for the XLA builder's caches of reduction functions (go-xla v0.4.13 keeps one
// per dtype and reduction for the whole computation, parented on the function that first used
// it, and refuses it in any other: "reductionFn is not a StableHLO closure of closure2"). Both
// are upstream limits: see internal/upstream.
func newIsolatedClosure(g *Graph, trips int, fn func(g *Graph) []*Node) *Function {
	start := len(g.Nodes())
	defer func() {
		recordGated(g, GatedRange{Start: start, End: len(g.Nodes()), Trips: trips})
	}()
	defer upstream.IsolateFunctionCaches(g)()
	return NewClosure(g, fn)
}

// GatedRange is a range of a graph's nodes (by index in Graph.Nodes) built inside a closure that
// runs only on some steps: the temporal eigen-solver's While, Trips times each (at most: it stops
// once converged) on the steps that learn a basis. Nothing else is gated: matrix mode's step has
// no control flow.
type GatedRange struct {
	Start, End int
	Trips      int
}

type gatedKey struct{}

func recordGated(g *Graph, r GatedRange) {
	ranges, _ := g.State(gatedKey{}).([]GatedRange)
	g.AttachState(gatedKey{}, append(ranges, r))
}

// GatedRanges returns the node ranges of g built inside gated closures, innermost ranges first;
// FLOP accounting uses them to tell per-step work from per-refresh work.
func GatedRanges(g *Graph) []GatedRange {
	ranges, _ := g.State(gatedKey{}).([]GatedRange)
	return ranges
}

// CapturedValues lists the ops of g's closures that use a value of another function (a capture),
// one line each. Backends without captures (XLA) cannot compile such a graph; an empty list says
// every closure takes its values through its own parameters.
func CapturedValues(g *Graph) []string {
	var out []string
	for _, n := range g.Nodes() {
		fn := n.Function()
		if fn == nil || fn.IsMain() {
			continue
		}
		for _, in := range n.Inputs() {
			if in.Function() != fn {
				out = append(out, fmt.Sprintf("%s #%d %s uses #%d %s of another function", n.Type(), n.Id(), n.Shape(), in.Id(), in.Type()))
			}
		}
	}
	return out
}
