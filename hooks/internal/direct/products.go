package direct

import (
	"fmt"
	"slices"
	"strings"

	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gradsub/gradsub/internal/upstream"
)

// Product is the single product node through which a weight W reaches the loss, seen as the
// matrix product y₂ = x₂·W₂ with x₂ [B, m], W₂ [m, n], y₂ [B, n]: the form the direct path needs.
// Leading and free axes are flattened; contracting axes are moved last on x and first on W.
type Product struct {
	Output  *Node // the product's output (FusedDense or DotGeneral)
	X       *Node // the other operand
	Operand *Node // the product's weight operand: the weight's value, or a reshape of it
	M, N    int
	Kind    string

	XRows   func(x *Node) *Node  // x → x₂ [B, m]
	DyRows  func(dy *Node) *Node // ∂y → ∂y₂ [B, n]
	ToW     func(w2 *Node) *Node // [m, n] → W's shape
	FromW   func(w *Node) *Node  // W → W₂ [m, n]
	HasBias bool
	// WeightReaders names the ops that, besides the product, read the weight as a function of
	// itself alone (a regularizer's Square or Abs); "" if none. Their gradient is taken by
	// back-propagation and projected on its own.
	WeightReaders string

	Conv *ConvInfo // a convolution's kernel (conv.go): xRows and dyRows are unused
}

// Describe says how the plan sees the product.
func (p *Product) Describe() string {
	s := fmt.Sprintf("%s: x[%d×%d]·W[%d×%d]; ∂W never built", p.Kind, p.X.Shape().Size()/p.M, p.M, p.M, p.N)
	if p.Conv != nil {
		s = fmt.Sprintf("%s: kernel %v as a [%d×%d] matrix (spatial·in × out); ∂K never built", p.Kind, p.Conv.kernelDims, p.M, p.N)
	}
	if p.WeightReaders != "" {
		s += fmt.Sprintf("; its regularizer's gradient (through %s, no batch) projected on its own", p.WeightReaders)
	}
	return s
}

// FindProduct returns the product consuming w (the variable's value node), or why there is none
// the direct path can use.
func FindProduct(g *Graph, w *Node) (*Product, string) {
	var consumers []*Node
	for _, n := range g.Nodes()[w.Id()+1:] {
		if slices.Contains(n.Inputs(), w) {
			consumers = append(consumers, n)
		}
	}
	if len(consumers) == 0 {
		return nil, "not used by the model"
	}
	// Besides its product, a weight may be read by functions of itself alone (GoMLX's L1 and L2
	// regularizers: Abs, Square, a sum): their gradient needs no batch, and the step adds its
	// projection to the coefficient (hooks/internal/step/matrix.go).
	var c *Node
	var readers []string
	for _, n := range consumers {
		if weightOnlyReader(g, n, w) {
			if kind := n.Type().String(); !slices.Contains(readers, kind) {
				readers = append(readers, kind)
			}
			continue
		}
		if c != nil {
			var kinds []string
			for _, c := range consumers {
				kinds = append(kinds, c.Type().String())
			}
			return nil, fmt.Sprintf("used by %d ops (%s): the direct path needs a single product", len(consumers), strings.Join(kinds, ", "))
		}
		c = n
	}
	if c == nil {
		return nil, "read only by functions of itself (" + strings.Join(readers, ", ") + "), not by a product"
	}
	p, why := consumerProduct(g, w, c)
	if p != nil && len(readers) > 0 {
		if p.WeightReaders != "" { // read through a reshape too
			readers = append(readers, p.WeightReaders)
		}
		p.WeightReaders = strings.Join(readers, ", ")
	}
	return p, why
}

// weightOnlyReader says whether reader, a consumer of w, computes a function of the weight alone
// that reaches the loss without meeting the batch: nothing that follows it is larger than w or a
// product. Its gradient with respect to w is then elementwise work, with no batch to reduce.
func weightOnlyReader(g *Graph, reader, w *Node) bool {
	if isProduct(reader) || reader.Type() == NodeTypeReshape || reader.Type() == NodeTypeGather {
		return false
	}
	size := w.Shape().Size()
	cone := map[*Node]bool{reader: true}
	for _, n := range g.Nodes()[reader.Id():] {
		if n != reader && !slices.ContainsFunc(n.Inputs(), func(in *Node) bool { return cone[in] }) {
			continue
		}
		if isProduct(n) || n.Shape().Size() > size || slices.ContainsFunc(n.Inputs(), func(in *Node) bool { return !cone[in] && in != w && in.Shape().Size() > size }) {
			return false
		}
		cone[n] = true
	}
	return true
}

// consumerProduct is findProduct for w's one consumer c that is not a weight-only reader.
func consumerProduct(g *Graph, w, c *Node) (*Product, string) {
	switch c.Type() {
	case NodeTypeFusedDense:
		return fusedDenseProduct(c, w)
	case NodeTypeDotGeneral:
		return dotGeneralProduct(c, w)
	case NodeTypeConvGeneral:
		return convProduct(c, w)
	case NodeTypeReshape:
		// A dense layer decomposed into primitives (XLA has no fused Dense) flattens a weight of
		// rank > 2 to a matrix first: follow the reshape to its product, once.
		if w.Type() != NodeTypeReshape {
			p, why := FindProduct(g, c)
			if p == nil {
				return nil, "reshaped, then " + why
			}
			inner := p.FromW
			reshaped, wDims := c.Shape().Dimensions, w.Shape().Dimensions
			p.FromW = func(w *Node) *Node { return inner(upstream.ReshapeTo(w, reshaped...)) }
			toInner := p.ToW
			p.ToW = func(w2 *Node) *Node { return upstream.ReshapeTo(toInner(w2), wDims...) }
			p.Kind = "Reshape→" + p.Kind
			return p, ""
		}
	}
	return nil, fmt.Sprintf("consumed by a %s op, not a product", c.Type())
}

func fusedDenseProduct(node, w *Node) (*Product, string) {
	if node.Inputs()[1] != w {
		return nil, "used as the input of a dense layer, not its weight"
	}
	noActivation, layout := upstream.FusedDenseForm(node)
	if !noActivation {
		return nil, "its dense layer fuses an activation (∂y would be taken after it)"
	}
	x := node.Inputs()[0]
	in := x.Shape().Dim(-1)
	wDims := w.Shape().Dimensions
	n := w.Shape().Size() / in
	p := &Product{Output: node, X: x, Operand: w, M: in, N: n, Kind: "FusedDense", HasBias: len(node.Inputs()) > 2}
	p.XRows = func(x *Node) *Node { return upstream.ReshapeTo(x, x.Shape().Size()/in, in) }
	p.DyRows = func(dy *Node) *Node { return upstream.ReshapeTo(dy, dy.Shape().Size()/n, n) }
	switch layout {
	case upstream.LayoutInputOutputs:
		p.FromW = func(w *Node) *Node { return upstream.ReshapeTo(w, in, n) }
		p.ToW = func(w2 *Node) *Node { return upstream.ReshapeTo(w2, wDims...) }
	case upstream.LayoutOutputsInput:
		p.FromW = func(w *Node) *Node { return Transpose(upstream.ReshapeTo(w, n, in), 0, 1) }
		p.ToW = func(w2 *Node) *Node { return upstream.ReshapeTo(Transpose(w2, 0, 1), wDims...) }
	default:
		return nil, "its dense layer has an unknown weight layout"
	}
	return p, ""
}

func dotGeneralProduct(node, w *Node) (*Product, string) {
	axes := upstream.DotGeneralAxes(node)
	lhs, rhs := node.Inputs()[0], node.Inputs()[1]
	wIsRHS := rhs == w
	if !wIsRHS && lhs != w {
		return nil, "not an operand of its product"
	}
	if lhs == rhs {
		return nil, "multiplied by itself"
	}
	if len(axes["lhsBatchAxes"]) > 0 || len(axes["rhsBatchAxes"]) > 0 {
		return nil, "its product has batch axes shared with the weight"
	}
	x, wC, xC := lhs, axes["rhsContractingAxes"], axes["lhsContractingAxes"]
	if !wIsRHS {
		x, wC, xC = rhs, axes["lhsContractingAxes"], axes["rhsContractingAxes"]
	}
	if len(wC) == 0 {
		return nil, "its product contracts no axis of the weight"
	}
	wF, xF := freeAxes(w.Rank(), wC), freeAxes(x.Rank(), xC)
	if len(wF) == 0 {
		return nil, "its product leaves no free axis of the weight"
	}
	p := &Product{Output: node, X: x, Operand: w, Kind: "DotGeneral"}
	p.M, p.N, p.FromW, p.ToW = weightAsMatrix(w, wC, wF)
	m, n := p.M, p.N
	xPerm := append(append([]int{}, xF...), xC...)
	p.XRows = func(x *Node) *Node {
		return upstream.ReshapeTo(upstream.TransposeTo(x, xPerm...), x.Shape().Size()/m, m)
	}
	// The output's axes are (lhs free…, rhs free…).
	numXF, numWF := len(xF), len(wF)
	p.DyRows = func(dy *Node) *Node {
		if !wIsRHS { // y = (W free…, x free…): put x's free axes first
			perm := make([]int, 0, numXF+numWF)
			for i := range numXF {
				perm = append(perm, numWF+i)
			}
			for i := range numWF {
				perm = append(perm, i)
			}
			dy = upstream.TransposeTo(dy, perm...)
		}
		return upstream.ReshapeTo(dy, dy.Shape().Size()/n, n)
	}
	return p, ""
}

// freeAxes are the axes of a rank-rank operand that a product does not contract.
func freeAxes(rank int, contracting []int) []int {
	var out []int
	for a := range rank {
		if !slices.Contains(contracting, a) {
			out = append(out, a)
		}
	}
	return out
}

// weightAsMatrix is the product's view of its weight w as a matrix [m, n]: its contracting axes
// wC as rows, its free axes wF as columns; fromW maps w (or its gradient) to the matrix, toW back.
func weightAsMatrix(w *Node, wC, wF []int) (m, n int, fromW, toW func(*Node) *Node) {
	m = 1
	for _, a := range wC {
		m *= w.Shape().Dim(a)
	}
	n = w.Shape().Size() / m
	wPerm := append(append([]int{}, wC...), wF...)
	permutedDims := make([]int, len(wPerm))
	for i, a := range wPerm {
		permutedDims[i] = w.Shape().Dim(a)
	}
	inverse := make([]int, len(wPerm))
	for i, a := range wPerm {
		inverse[a] = i
	}
	fromW = func(w *Node) *Node { return upstream.ReshapeTo(upstream.TransposeTo(w, wPerm...), m, n) }
	toW = func(w2 *Node) *Node { return upstream.TransposeTo(upstream.ReshapeTo(w2, permutedDims...), inverse...) }
	return m, n, fromW, toW
}
