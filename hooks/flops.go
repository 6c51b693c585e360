package hooks

import (
	"fmt"
	"slices"

	"github.com/gomlx/compute/support/humanize"

	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gradsub/gradsub/hooks/internal/direct"
	"github.com/gradsub/gradsub/internal/upstream"
	"github.com/gradsub/gradsub/projector"
)

// FLOPs splits the product work of one training step, counted from the compiled step graph: each
// live product (DotGeneral, FusedDense, the used outputs of FusedDenseVJP) costs 2·M·N·K FLOPs, a
// convolution 2 × its output's size × the multiply-adds per output element.
// Products nothing reads (the backends drop them) are not counted; elementwise work is not
// counted either: products dominate, and they are what projection changes.
type FLOPs struct {
	Forward  int64 // the model and loss
	Gradient int64 // back-propagation, including the projection of the gradients
	// Optimizer is the base optimizer, the lift of the update and the drift bookkeeping.
	Optimizer int64
	// PerLearn is the gated work of learning the bases (all projected variables together), paid
	// on the steps that learn (Report.LearnRuns): the temporal eigen-solve. Matrix mode has none.
	PerLearn int64
	// Ops counts the executed ops (every live node but parameters and constants) of an ordinary
	// step, by the same split: what a step costs in kernel launches and small-op overhead,
	// which FLOPs do not show. Scalar counts those of them whose output is a single value: pure
	// dispatch (about 0.6 µs each on the Go backend, docs/log/2026-12-benchmarks.md).
	Ops struct{ Forward, Gradient, Optimizer, Scalar int }
}

// StepOps returns the number of ops an ordinary step executes.
func (f FLOPs) StepOps() int { return f.Ops.Forward + f.Ops.Gradient + f.Ops.Optimizer }

// Gated returns the gated work done over a run, from its report's counts.
func (f FLOPs) Gated(r Report) int64 { return r.LearnRuns * f.PerLearn }

// Step returns the FLOPs of an ordinary step: everything but the gated work.
func (f FLOPs) Step() int64 { return f.Forward + f.Gradient + f.Optimizer }

// String gives the step's FLOPs by phase, with SI prefixes.
func (f FLOPs) String() string {
	return fmt.Sprintf("forward %s, gradient %s, optimizer %s, per learning %s",
		HumanFLOPs(f.Forward), HumanFLOPs(f.Gradient), HumanFLOPs(f.Optimizer), HumanFLOPs(f.PerLearn))
}

// HumanFLOPs formats a FLOP count with an SI prefix ("7.3GFLOP").
func HumanFLOPs(n int64) string { return humanize.Count(n) + "FLOP" }

// StepFLOPs counts the products of the last step graph built by the optimizer. With projection
// disabled (Enabled(false)) the graph is the base optimizer's own.
func (o *Optimizer) StepFLOPs() (FLOPs, error) {
	g, marks := o.StepGraph()
	if g == nil {
		return FLOPs{}, fmt.Errorf("hooks: no step graph built yet: run a training step first")
	}
	o.mu.Lock()
	roots := o.roots
	o.mu.Unlock()
	return CountFLOPs(g, marks, roots), nil
}

// Live returns the nodes of g that the given roots (a step's outputs) depend on: what the
// backends execute. Nodes built but never read are dropped by both backends.
func Live(g *Graph, roots []*Node) map[*Node]bool {
	live := make(map[*Node]bool, len(g.Nodes()))
	stack := append([]*Node{}, roots...)
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if live[n] {
			continue
		}
		live[n] = true
		stack = append(stack, n.Inputs()...)
	}
	// Gated closures read captured values and run their own nodes: keep the closures' nodes of
	// a live gate (their outputs are live) by keeping every node of a gated range.
	for _, r := range projector.GatedRanges(g) {
		for _, n := range g.Nodes()[r.Start:r.End] {
			live[n] = true
		}
	}
	return live
}

// CountFLOPs counts the live products of g (see Live), split by the marks.
func CountFLOPs(g *Graph, marks GraphMarks, roots []*Node) FLOPs {
	nodes := g.Nodes()
	live := Live(g, roots)
	consumed := make(map[*Node]bool, len(nodes))
	for _, n := range nodes {
		if !live[n] {
			continue
		}
		for _, in := range n.Inputs() {
			consumed[in] = true
		}
	}
	gated := projector.GatedRanges(g)
	var f FLOPs
	for i, n := range nodes {
		if !live[n] {
			continue
		}
		cost := productFLOPs(n, consumed)
		_, inGate := gatedTrips(gated, i)
		if t := n.Type(); !inGate && t != NodeTypeParameter && t != NodeTypeConstant {
			if n.Shape().Size() <= 1 {
				f.Ops.Scalar++
			}
			switch {
			case i < marks.Forward:
				f.Ops.Forward++
			case i < marks.Gradient:
				f.Ops.Gradient++
			default:
				f.Ops.Optimizer++
			}
		}
		if cost == 0 {
			continue
		}
		if trips, ok := gatedTrips(gated, i); ok {
			f.PerLearn += cost * int64(trips)
			continue
		}
		switch {
		case i < marks.Forward:
			f.Forward += cost
		case i < marks.Gradient:
			f.Gradient += cost
		default:
			f.Optimizer += cost
		}
	}
	return f
}

// gatedTrips finds the innermost gated range holding node i: how many times it runs per gate run.
func gatedTrips(ranges []projector.GatedRange, i int) (trips int, ok bool) {
	for _, r := range ranges {
		if i >= r.Start && i < r.End {
			return r.Trips, true
		}
	}
	return 0, false
}

// productFLOPs is 2·M·N·K for a product node, 0 for anything else.
func productFLOPs(n *Node, consumed map[*Node]bool) int64 {
	switch n.Type() {
	case NodeTypeDotGeneral:
		lhs, rhs := n.Inputs()[0], n.Inputs()[1]
		if n.IsScalar() && lhs == rhs {
			return 0 // a vector's sum of squares (the finite check): a reduction, not a product
		}
		axes := upstream.DotGeneralAxes(n)
		if len(axes["lhsContractingAxes"])+len(axes["lhsBatchAxes"]) == lhs.Rank() &&
			len(axes["rhsContractingAxes"])+len(axes["rhsBatchAxes"]) == rhs.Rank() {
			return 0 // no free axis: inner products (the rules' sums), reductions, not products
		}
		contracted := int64(1)
		for _, axis := range axes["lhsContractingAxes"] {
			if axis < lhs.Rank() {
				contracted *= int64(lhs.Shape().Dim(axis))
			}
		}
		return 2 * int64(n.Shape().Size()) * contracted
	case NodeTypeFusedDense:
		return 2 * denseMulAdds(n.Inputs()[0], n.Inputs()[1])
	case NodeTypeConvGeneral:
		return direct.ConvFLOPs(n)
	case NodeTypeFusedDenseVJP:
		// Outputs: ∂x, ∂W (and ∂b, no product). Count only the outputs something consumes.
		x, w := n.Inputs()[0], n.Inputs()[1]
		perProduct := 2 * denseMulAdds(x, w)
		var total int64
		for _, split := range splitsOf(n, consumed) {
			if split.Shape().Equal(x.Shape()) || split.Shape().Equal(w.Shape()) {
				total += perProduct
			}
		}
		return total
	}
	return 0
}

// denseMulAdds is B·in·out for a dense layer with input x [..., in] and weight w (in·out elements).
func denseMulAdds(x, w *Node) int64 {
	in := x.Shape().Dim(-1)
	return int64(x.Shape().Size()/in) * int64(w.Shape().Size())
}

// splitsOf returns the consumed SplitNode outputs of a multi-output node.
func splitsOf(n *Node, consumed map[*Node]bool) []*Node {
	var out []*Node
	for _, m := range n.Graph().Nodes()[n.Id()+1:] {
		if m.Type() != NodeTypeSplitNode {
			break
		}
		if len(m.Inputs()) == 1 && m.Inputs()[0] == n && consumed[m] {
			out = append(out, m)
		}
	}
	return out
}

// KernelGradientFLOPs is the FLOPs of the live convolutions of the last step graph that build a
// kernel's full gradient (an output with a kernel's dimensions, in any order, from a convolution
// whose kernel is not a variable): the work the direct path removes, for reports that set a
// conv net's kernel-gradient FLOPs beside stock's.
func KernelGradientFLOPs(o *Optimizer) (int64, error) {
	g, _ := o.StepGraph()
	if g == nil {
		return 0, fmt.Errorf("hooks: no step graph built yet: run a training step first")
	}
	o.mu.Lock()
	roots := o.roots
	o.mu.Unlock()
	live := Live(g, roots)
	sortedDims := func(n *Node) string {
		dims := slices.Clone(n.Shape().Dimensions)
		slices.Sort(dims)
		return fmt.Sprint(dims)
	}
	kernels := map[string]bool{}
	for _, n := range g.Nodes() {
		if n.Type() == NodeTypeConvGeneral && n.Inputs()[1].Type() == NodeTypeParameter {
			kernels[sortedDims(n.Inputs()[1])] = true
		}
	}
	var total int64
	for _, n := range g.Nodes() {
		if live[n] && n.Type() == NodeTypeConvGeneral && n.Inputs()[1].Type() != NodeTypeParameter && kernels[sortedDims(n)] {
			total += direct.ConvFLOPs(n)
		}
	}
	return total, nil
}
