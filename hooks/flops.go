package hooks

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gradsub/gradsub/projector"
)

// FLOPs splits the product work of one training step, counted from the step graph itself: each
// product (DotGeneral, FusedDense, the used outputs of FusedDenseVJP) costs 2·M·N·K FLOPs.
// Elementwise work is not counted: products dominate, and they are what projection changes.
type FLOPs struct {
	Forward   int64 // the model and loss
	Gradient  int64 // back-propagation
	Projector int64 // projection, drift signals and the base optimizer, every step
	// PerSVD is the gated work of one basis SVD (all projected variables together): paid at the
	// end of warm-up and at each refresh only.
	PerSVD int64
}

// Step returns the FLOPs of an ordinary step: everything but the gated SVD.
func (f FLOPs) Step() int64 { return f.Forward + f.Gradient + f.Projector }

// GradientAndProjector is the cost of producing the update from the loss: what projection
// promises to reduce.
func (f FLOPs) GradientAndProjector() int64 { return f.Gradient + f.Projector }

func (f FLOPs) String() string {
	return fmt.Sprintf("forward %s, gradient %s, projector %s, per SVD %s",
		HumanFLOPs(f.Forward), HumanFLOPs(f.Gradient), HumanFLOPs(f.Projector), HumanFLOPs(f.PerSVD))
}

// HumanFLOPs formats a FLOP count with an SI prefix.
func HumanFLOPs(n int64) string {
	x := float64(n)
	for _, unit := range []string{"", "k", "M", "G", "T"} {
		if x < 1000 {
			return fmt.Sprintf("%.3g %sFLOP", x, unit)
		}
		x /= 1000
	}
	return fmt.Sprintf("%.3g PFLOP", x)
}

// StepFLOPs counts the products of the last step graph built by the optimizer. With projection
// disabled (Enabled(false)) the graph is the base optimizer's own, and Projector is zero.
func (o *Optimizer) StepFLOPs() (FLOPs, error) {
	g, marks := o.StepGraph()
	if g == nil {
		return FLOPs{}, fmt.Errorf("hooks: no step graph built yet: run a training step first")
	}
	return CountFLOPs(g, marks), nil
}

// CountFLOPs counts the products of g, split by the marks.
func CountFLOPs(g *Graph, marks GraphMarks) FLOPs {
	nodes := g.Nodes()
	consumed := make(map[*Node]bool, len(nodes))
	for _, n := range nodes {
		for _, in := range n.Inputs() {
			consumed[in] = true
		}
	}
	gated := projector.GatedRanges(g)
	var f FLOPs
	for i, n := range nodes {
		cost := productFLOPs(n, consumed)
		if cost == 0 {
			continue
		}
		if trips, ok := gatedTrips(gated, i); ok {
			f.PerSVD += cost * int64(trips)
			continue
		}
		switch {
		case i < marks.Forward:
			f.Forward += cost
		case i < marks.Gradient:
			f.Gradient += cost
		default:
			f.Projector += cost
		}
	}
	return f
}

func gatedTrips(ranges []projector.GatedRange, i int) (int, bool) {
	for _, r := range ranges {
		if i >= r.Start && i < r.End {
			return r.Trips, true
		}
	}
	return 0, false
}

var contractingAxesRE = regexp.MustCompile(`lhsContractingAxes=\[([0-9 ]*)\]`)

// productFLOPs is 2·M·N·K for a product node, 0 for anything else.
func productFLOPs(n *Node, consumed map[*Node]bool) int64 {
	switch n.Type() {
	case NodeTypeDotGeneral:
		lhs := n.Inputs()[0]
		contracted := int64(1)
		// The node's description is the only public view of its contracting axes.
		if m := contractingAxesRE.FindStringSubmatch(n.String()); m != nil {
			for _, field := range strings.Fields(m[1]) {
				axis, err := strconv.Atoi(field)
				if err == nil && axis < lhs.Rank() {
					contracted *= int64(lhs.Shape().Dim(axis))
				}
			}
		}
		return 2 * int64(n.Shape().Size()) * contracted
	case NodeTypeFusedDense:
		return 2 * denseMulAdds(n.Inputs()[0], n.Inputs()[1])
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
