package direct

import (
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/support/xslices"
	"github.com/gradsub/gradsub/internal/upstream"
)

// directKey marks, in a graph's state, the product nodes whose weight takes the direct path: their
// weight gradient is computed by the projector from ∂y, so back-propagation must not build it.
type directKey struct{}

// directProducts is the set of product nodes (by node) on the direct path in a graph.
type directProducts map[*Node]bool

func directSet(g *Graph) directProducts {
	set, _ := g.State(directKey{}).(directProducts)
	return set
}

// MarkDirect records that p's weight takes the direct path in g.
func MarkDirect(g *Graph, p *Product) {
	set := directSet(g)
	if set == nil {
		set = directProducts{}
		g.AttachState(directKey{}, set)
	}
	set[p.Output] = true
	g.AttachState(directWeightKey{p.Output}, p.Operand)
}

// The VJPs of FusedDense, DotGeneral and ConvGeneral are wrapped once, at start-up: for a product
// marked direct they return no weight gradient (zeros that nothing reads, no product), and for FusedDense
// they decompose ∂x and ∂b (the fused VJP would compute ∂W with them). Every other node, in every
// graph, gets GoMLX's own VJP unchanged.
func init() {
	stockDense := VJPRegistration[NodeTypeFusedDense]
	VJPRegistration[NodeTypeFusedDense] = func(node *Node, vjps []*Node, outputShape shapes.Shape) []*Node {
		if !directSet(node.Graph())[node] {
			return stockDense(node, vjps, outputShape)
		}
		return directDenseVJP(node, vjps[0])
	}
	stockConv := VJPRegistration[NodeTypeConvGeneral]
	VJPRegistration[NodeTypeConvGeneral] = func(node *Node, vjps []*Node, outputShape shapes.Shape) []*Node {
		grads := stockConv(node, vjps, outputShape)
		if directSet(node.Graph())[node] {
			// The kernel's gradient (its own convolution in GoMLX's VJP) is dropped: nothing
			// reads it, so no backend runs it; the projector takes ∂K·Q from ∂y (conv.go).
			grads[1] = Zeros(node.Graph(), node.Inputs()[1].Shape())
		}
		return grads
	}
	stockDot := VJPRegistration[NodeTypeDotGeneral]
	VJPRegistration[NodeTypeDotGeneral] = func(node *Node, vjps []*Node, outputShape shapes.Shape) []*Node {
		if !directSet(node.Graph())[node] {
			return stockDot(node, vjps, outputShape)
		}
		// GoMLX's DotGeneral VJP builds each operand's gradient as its own product: the
		// weight's is dropped here (zeros in its place), so it is never built into a step.
		grads := stockDot(node, vjps, outputShape)
		p, _ := dotGeneralProduct(node, weightOperand(node))
		if p == nil {
			return grads
		}
		for i, in := range node.Inputs() {
			if in != p.X {
				grads[i] = Zeros(node.Graph(), in.Shape())
			}
		}
		return grads
	}
}

// weightOperand returns the operand of a direct DotGeneral that is a projected weight (or its
// reshape): the one recorded by the optimizer.
func weightOperand(node *Node) *Node {
	if w, ok := node.Graph().State(directWeightKey{node}).(*Node); ok {
		return w
	}
	return node.Inputs()[1]
}

type directWeightKey struct{ node *Node }

// directDenseVJP is FusedDense's VJP without ∂W: ∂x = ∂y·Wᵀ and ∂b = Σ ∂y, each its own op, so
// the backends drop ∂x where nothing needs it (a first layer). Both read ∂y and W in their own
// shapes, contracting W's output axes directly: seen as matrices they were reshapes, which the Go
// backend copies unless it owns the input (∂y and a rank-3 attention weight are read again by
// the projector).
func directDenseVJP(node, dy *Node) []*Node {
	inputs := node.Inputs()
	x, w := inputs[0], inputs[1]
	_, layout := upstream.FusedDenseForm(node)
	dy = ConvertDType(dy, w.DType())
	lead, outs := x.Rank()-1, w.Rank()-1 // x: [lead…, in]; ∂y: [lead…, outs…]
	wOuts := xslices.Iota(1, outs)       // W: [in, outs…]
	if layout == upstream.LayoutOutputsInput {
		wOuts = xslices.Iota(0, outs) // W: [outs…, in]
	}
	dx := DotGeneral(dy, xslices.Iota(lead, outs), nil, w, wOuts, nil) // [lead…, in]
	grads := []*Node{ConvertDType(dx, x.DType()), Zeros(node.Graph(), w.Shape())}
	if len(inputs) > 2 {
		b := inputs[2]
		db := dy
		if lead > 0 {
			db = ReduceSum(dy, xslices.Iota(0, lead)...)
		}
		grads = append(grads, ConvertDType(upstream.ReshapeTo(db, b.Shape().Dimensions...), b.DType()))
	}
	return grads
}
