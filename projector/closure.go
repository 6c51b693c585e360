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
	return newIsolatedClosure(g, 1, false, fn)
}

// newIsolatedClosure builds the closure and records its nodes as gated work run trips times
// each time the closure runs (1 for an If branch, the iteration count for a While body); check
// marks the work of a drift check, as opposed to learning.
func newIsolatedClosure(g *Graph, trips int, check bool, fn func(g *Graph) []*Node) *Function {
	start := len(g.Nodes())
	defer func() {
		recordGated(g, GatedRange{Start: start, End: len(g.Nodes()), Trips: trips, Check: check})
	}()
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

// Gate returns fn(inputs) when run (a scalar bool) is true, and otherwise (nodes with the shapes
// of fn's outputs) when it is false; fn is then not executed. A nil run calls fn directly.
//
// It is an If whose branches capture inputs and otherwise. Captured values need care on the Go
// backend (compute v0.1.14): a branch given ownership of a captured buffer (granted when the If is
// its last user) may return it as its output while the caller also releases it, corrupting later
// steps. keepAlive gives every captured value one more use after the If, so ownership is never
// granted and a branch returning a captured value returns a copy. (A While with explicit state
// avoids captures too, but copies every state buffer it does not own on every step.)
func Gate(run *Node, inputs, otherwise []*Node, fn func(inputs []*Node) []*Node) []*Node {
	return gate(run, false, inputs, otherwise, fn)
}

// CheckGate is Gate for the work of a drift check (a measurement, not a learning step): FLOP
// accounting counts its nodes apart (GatedRange.Check).
func CheckGate(run *Node, inputs, otherwise []*Node, fn func(inputs []*Node) []*Node) []*Node {
	return gate(run, true, inputs, otherwise, fn)
}

func gate(run *Node, check bool, inputs, otherwise []*Node, fn func(inputs []*Node) []*Node) []*Node {
	if run == nil {
		return fn(inputs)
	}
	g := run.Graph()
	onTrue := newIsolatedClosure(g, 1, check, func(g *Graph) []*Node {
		outs := fn(inputs)
		if len(outs) != len(otherwise) {
			panicf("Gate: fn returned %d outputs, want %d", len(outs), len(otherwise))
		}
		for i, o := range outs {
			if !o.Shape().Equal(otherwise[i].Shape()) {
				panicf("Gate: output %d has shape %s, want %s", i, o.Shape(), otherwise[i].Shape())
			}
		}
		return distinctOutputs(outs)
	})
	// A copy: a closure's Return replaces returned parent-scope nodes in the slice it is given
	// (by closure-local Identity nodes), and otherwise is read again below.
	onFalse := newIsolatedClosure(g, 1, check, func(g *Graph) []*Node {
		return distinctOutputs(append([]*Node{}, otherwise...))
	})
	outs := If(run, onTrue, onFalse)
	return keepAlive(outs, append(append([]*Node{}, inputs...), otherwise...))
}

// distinctOutputs keeps a branch from returning two equal computations: a branch returning two
// zero vectors of one shape (distinct nodes, but the same computation) leaves the second output
// "not computed" on the Go backend (compute v0.1.14; TestGateWithEqualOutputs). Every output
// after the first of its shape is made a computation of its own, selected away from a constant
// that differs per output.
func distinctOutputs(outs []*Node) []*Node {
	seen := map[string]bool{}
	for i, o := range outs {
		key := o.Shape().String()
		if seen[key] {
			g := o.Graph()
			marker := BroadcastToShape(Scalar(g, o.DType(), float64(i+1)), o.Shape())
			outs[i] = Where(Const(g, false), marker, o)
		}
		seen[key] = true
	}
	return outs
}

// keepAlive returns outs with a use of each captured node folded into its first float output: one
// element of each is gathered at an index computed from that output (so the gather runs after the
// If), selected away by a constant-false Where (so NaN or Inf cannot leak), and added in.
func keepAlive(outs, captured []*Node) []*Node {
	target := -1
	for i, o := range outs {
		if o.DType().IsFloat() {
			target = i
			break
		}
	}
	if target < 0 {
		panicf("Gate: needs at least one float output")
	}
	out := outs[target]
	g := out.Graph()
	// zero (int32) depends on the If's output.
	firstOut := Reshape(Slice(out, firstElement(out)...))
	zero := Where(IsNaN(firstOut), Const(g, int32(0)), Const(g, int32(0)))
	touched := ScalarZero(g, out.DType())
	for _, c := range captured {
		var element *Node
		if c.Rank() == 0 {
			element = Where(Equal(zero, zero), c, c)
		} else {
			element = Reshape(Gather(c, BroadcastToDims(zero, 1, c.Rank())))
		}
		element = ConvertDType(element, out.DType())
		touched = Add(touched, Where(Const(g, false), element, ZerosLike(element)))
	}
	result := append([]*Node{}, outs...)
	result[target] = Add(out, touched)
	return result
}

// firstElement is the slice spec of a tensor's first element (all axes at index 0).
func firstElement(x *Node) []SliceAxisSpec {
	specs := make([]SliceAxisSpec, x.Rank())
	for i := range specs {
		specs[i] = AxisRange(0, 1)
	}
	return specs
}

// GatedRange is a range of a graph's nodes (by index in Graph.Nodes) built inside a closure that
// the projector gates: they run only on the steps that learn a basis (or, Check, that run a drift
// check), Trips times each (at most: the eigen-solver's While stops once converged).
type GatedRange struct {
	Start, End int
	Trips      int
	Check      bool
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
