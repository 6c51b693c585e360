package projector

import (
	"reflect"
	"unsafe"

	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph"
)

// NewIsolatedClosure is graph.NewClosure for closures built next to, or inside, other closures.
//
// GoMLX (v0.28) caches scalar constants per graph, not per function, and the Go backend parents
// every closure on the main function: a closure may capture main-function values only. So a
// scalar first created inside one closure, handed out again by the cache to a sibling or nested
// closure (or to the main function afterwards), is rejected ("uses a node from a different
// function scope"). While fn runs, this helper leaves only main-function scalars in the cache, and
// afterwards restores the cache as it was, so scalars never leak across functions.
func NewIsolatedClosure(g *Graph, fn func(g *Graph) []*Node) *Function {
	return newIsolatedClosure(g, 1, fn)
}

// newIsolatedClosure builds the closure and records its nodes as gated work run trips times
// each time the closure runs (1 for an If branch, the iteration count for a While body).
func newIsolatedClosure(g *Graph, trips int, fn func(g *Graph) []*Node) *Function {
	start := len(g.Nodes())
	defer func() { recordGated(g, GatedRange{Start: start, End: len(g.Nodes()), Trips: trips}) }()
	cache := scalarCacheOf(g)
	if cache == nil {
		return NewClosure(g, fn)
	}
	saved := make(map[dtypes.DType]map[float64]*Node, len(cache))
	for dtype, values := range cache {
		saved[dtype] = make(map[float64]*Node, len(values))
		for v, node := range values {
			saved[dtype][v] = node
			if fn := node.Function(); fn != nil && !fn.IsMain() {
				delete(values, v)
			}
		}
	}
	defer func() {
		for dtype := range cache {
			delete(cache, dtype)
		}
		for dtype, values := range saved {
			cache[dtype] = values
		}
	}()
	return NewClosure(g, fn)
}

// scalarCacheOf returns the graph's scalar cache, or nil if this GoMLX version keeps it differently
// (then closures are built plainly, and a sibling-scope error would name the problem).
func scalarCacheOf(g *Graph) map[dtypes.DType]map[float64]*Node {
	field := reflect.ValueOf(g).Elem().FieldByName("scalars")
	if !field.IsValid() || field.Kind() != reflect.Map {
		return nil
	}
	field = reflect.NewAt(field.Type(), unsafe.Pointer(field.UnsafeAddr())).Elem()
	cache, ok := field.Convert(reflect.TypeFor[map[dtypes.DType]map[float64]*Node]()).Interface().(map[dtypes.DType]map[float64]*Node)
	if !ok {
		return nil
	}
	return cache
}

// GatedRange is a range of a graph's nodes (by index in Graph.Nodes) built inside a closure that
// the projector gates: they run only on the steps that learn a basis, Trips times each.
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
