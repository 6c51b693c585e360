package projector

import (
	"fmt"
	"os"
	"reflect"
	"unsafe"

	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph"
)

// NewIsolatedClosure is graph.NewClosure for closures built next to, or inside, other closures.
//
// GoMLX (v0.28) caches scalar constants per graph, not per function, so a scalar first created
// inside one closure would be handed out again to a sibling or nested closure, or to the main
// function afterwards ("uses a node from a different function scope"); and a main-function
// scalar used inside a closure is a capture, which only the Go backend supports. While fn runs,
// this helper empties the cache (fn's scalars are its own) and afterwards restores it as it was.
// It does the same for the XLA builder's caches of reduction functions (go-xla v0.4.13 keeps one
// per dtype and reduction for the whole computation, parented on the function that first used
// it, and refuses it in any other: "reductionFn is not a StableHLO closure of closure2").
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
	defer isolateMap(reflect.ValueOf(g).Elem().FieldByName("scalars"))()
	defer isolateMap(reflect.ValueOf(g).Elem().FieldByName("tensorConstants"))()
	for _, cache := range xlaBuilderCaches(g) {
		defer isolateMap(cache)()
	}
	return NewClosure(g, fn)
}

// isolateMap empties the map in field (an unexported field, reached through unsafe) and returns
// the function that puts its entries back. An invalid field (another library version that keeps
// no such cache) is left alone.
func isolateMap(field reflect.Value) (restore func()) {
	if !field.IsValid() || field.Kind() != reflect.Map || !field.CanAddr() {
		return func() {}
	}
	field = reflect.NewAt(field.Type(), unsafe.Pointer(field.UnsafeAddr())).Elem()
	saved := field.Interface()
	field.Set(reflect.MakeMap(field.Type()))
	return func() { field.Set(reflect.ValueOf(saved)) }
}

// xlaCacheFields name the caches of go-xla's Builder (compute/xla) that hold functions.
var xlaCacheFields = []string{"cacheReductions", "cacheArgMinMax", "cacheSelections"}

// xlaBuilderCaches are the fields of go-xla's builder for g that cache functions (reductions,
// arg-min/max, selections) across the whole computation; none on other backends.
func xlaBuilderCaches(g *Graph) []reflect.Value {
	builder := reflect.ValueOf(g).Elem().FieldByName("builder")
	for builder.IsValid() && (builder.Kind() == reflect.Interface || builder.Kind() == reflect.Pointer) {
		if builder.IsNil() {
			return nil
		}
		builder = builder.Elem()
	}
	if !builder.IsValid() || builder.Kind() != reflect.Struct {
		return nil
	}
	var caches []reflect.Value
	for _, name := range xlaCacheFields {
		if f := builder.FieldByName(name); f.IsValid() {
			caches = append(caches, f)
		}
	}
	return caches
}

// Gate returns fn(inputs) when run (a scalar bool) is true, and otherwise (nodes with the shapes
// of fn's outputs) when it is false; fn is then not executed. A nil run calls fn directly. fn must
// compute from its inputs only (and constants it creates): on backends without captures it runs
// in a function of its own.
//
// On the Go backend it is an If whose branches capture inputs and otherwise. Captured values need
// care there (compute v0.1.14): a branch given ownership of a captured buffer (granted when the If
// is its last user) may return it as its output while the caller also releases it, corrupting
// later steps. keepAlive gives every captured value one more use after the If, so ownership is
// never granted and a branch returning a captured value returns a copy.
//
// Other backends (XLA) cannot capture values into a closure, so there the gate is a While loop of
// zero or one iteration whose state carries the inputs in and the outputs out (see
// CapturesSupported). On the Go backend that form would copy every state buffer on every step.
func Gate(run *Node, inputs, otherwise []*Node, fn func(inputs []*Node) []*Node) []*Node {
	return gate(run, false, inputs, otherwise, fn)
}

// CheckGate is Gate for the work of a drift check (a measurement, not a learning step): FLOP
// accounting counts its nodes apart (GatedRange.Check).
func CheckGate(run *Node, inputs, otherwise []*Node, fn func(inputs []*Node) []*Node) []*Node {
	return gate(run, true, inputs, otherwise, fn)
}

// GatePart is one computation of a GateAll: fn computes its outputs from inputs; otherwise
// stands for them when the gate does not run.
type GatePart struct {
	Inputs, Otherwise []*Node
	Fn                func(inputs []*Node) []*Node
}

// GateAll gates several computations with one predicate in one gate, and returns each part's
// outputs: one If (or While) per step for all of a model's variables instead of one each. Each
// gate costs something on every step, run or not: little on the Go backend, but on an H200 with
// XLA the projector cost about 0.2 ms per variable per step when each variable had its own gates
// (Whiles, whose condition the host reads back).
func GateAll(run *Node, check bool, parts []GatePart) [][]*Node {
	if len(parts) == 0 {
		return nil
	}
	var inputs, otherwise []*Node
	for _, p := range parts {
		inputs = append(inputs, p.Inputs...)
		otherwise = append(otherwise, p.Otherwise...)
	}
	outs := gate(run, check, inputs, otherwise, func(in []*Node) []*Node {
		var all []*Node
		for _, p := range parts {
			part := p.Fn(in[:len(p.Inputs)])
			if len(part) != len(p.Otherwise) {
				panicf("GateAll: a part returned %d outputs, want %d", len(part), len(p.Otherwise))
			}
			all = append(all, part...)
			in = in[len(p.Inputs):]
		}
		return all
	})
	result := make([][]*Node, len(parts))
	for i, p := range parts {
		result[i], outs = outs[:len(p.Otherwise):len(p.Otherwise)], outs[len(p.Otherwise):]
	}
	return result
}

// CaptureFreeEnv, set to 1, makes Gate use its capture-free form on every backend: the form XLA
// needs, run on the Go backend (tests check with it that no gated computation captures a value).
const CaptureFreeEnv = "GRADSUB_CAPTURE_FREE"

// CapturesSupported says whether closures on g's backend may use values of their parent
// function: only the Go backend's may (compute v0.1.14); go-xla v0.4.13 requires every operand of
// an op to belong to the op's function.
func CapturesSupported(g *Graph) bool {
	if os.Getenv(CaptureFreeEnv) == "1" {
		return false
	}
	return g.Backend() != nil && g.Backend().Name() == "Go Backend"
}

func gate(run *Node, check bool, inputs, otherwise []*Node, fn func(inputs []*Node) []*Node) []*Node {
	if run == nil {
		return fn(inputs)
	}
	g := run.Graph()
	checkOutputs := func(outs []*Node) {
		if len(outs) != len(otherwise) {
			panicf("Gate: fn returned %d outputs, want %d", len(outs), len(otherwise))
		}
		for i, o := range outs {
			if !o.Shape().Equal(otherwise[i].Shape()) {
				panicf("Gate: output %d has shape %s, want %s", i, o.Shape(), otherwise[i].Shape())
			}
		}
	}
	if !CapturesSupported(g) {
		return whileGate(run, check, inputs, otherwise, fn, checkOutputs)
	}
	onTrue := newIsolatedClosure(g, 1, check, func(g *Graph) []*Node {
		outs := fn(inputs)
		checkOutputs(outs)
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

// whileGate is the capture-free gate: a While whose state is (iterations left, inputs...,
// outputs...), starting with 1 iteration left when run is true and 0 otherwise; the body computes
// fn from its own parameters.
func whileGate(run *Node, check bool, inputs, otherwise []*Node, fn func([]*Node) []*Node, checkOutputs func([]*Node)) []*Node {
	g := run.Graph()
	state := append(append([]*Node{ConvertDType(run, dtypes.Int32)}, inputs...), otherwise...)
	parameters := func(g *Graph) []*Node {
		params := make([]*Node, len(state))
		for i, s := range state {
			params[i] = Parameter(g, fmt.Sprintf("gate_%d", i), s.Shape())
		}
		return params
	}
	cond := newIsolatedClosure(g, 1, check, func(g *Graph) []*Node {
		left := parameters(g)[0]
		return []*Node{GreaterThan(left, ZerosLike(left))}
	})
	body := newIsolatedClosure(g, 1, check, func(g *Graph) []*Node {
		p := parameters(g)
		in := p[1 : 1+len(inputs)]
		outs := fn(in)
		checkOutputs(outs)
		return append(append([]*Node{AddScalar(p[0], -1)}, in...), outs...)
	})
	return While(cond, body, state...)[1+len(inputs):]
}

// distinctOutputs keeps a branch from returning two equal computations: a branch returning two
// zero vectors of one shape (distinct nodes, but the same computation) leaves the second output
// "not computed" on the Go backend (compute v0.1.14; TestGateWithEqualOutputs). Every output
// after the first of its shape is made a computation of its own, selected by a condition that
// differs per output.
func distinctOutputs(outs []*Node) []*Node {
	seen := map[string]bool{}
	for i, o := range outs {
		key := o.Shape().String()
		if seen[key] {
			// never is false, and a computation of its own for each output (a constant marker
			// would not do for booleans: every non-zero marker is the same true).
			g := o.Graph()
			never := Equal(Const(g, int32(i+1)), Const(g, int32(0)))
			outs[i] = Where(never, ZerosLike(o), o)
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

// CapturedValues lists the ops of g's closures that use a value of another function (a capture),
// one line each. Backends without captures (XLA) cannot compile such a graph; an empty list says
// every gated computation takes its values through its own parameters.
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
