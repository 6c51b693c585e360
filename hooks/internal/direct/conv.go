package direct

import (
	"fmt"
	"math"
	"slices"

	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gradsub/gradsub/internal/upstream"
	"github.com/gradsub/gradsub/projector"
)

// Convolutions on the direct path.
//
// A kernel K (GoMLX's layouts: [spatial…, in, out] channels-last, [out, in, spatial…]
// channels-first) is projected as the matrix K₂ [spatial·in, out] (m = kh·kw·…·in, n = out): the
// matrix a convolution multiplies each input patch by. Its gradient ∂K₂ = Σ patches(x)ᵀ·∂y is never built:
//
//   - basis on the output side (Right, Q [out, r]): ∂K₂·Q is the kernel gradient of the same
//     convolution taken against ∂y·Q, r output channels instead of out;
//   - basis on the patch side (Left, Q [m, r]): Qᵀ·∂K₂ = conv(x, Q)ᵀ·∂y, the convolution of x
//     with Q as an r-channel kernel, contracted with ∂y over batch and positions.
//
// The same convolution with another kernel is the node cloned with new inputs
// (Node.CloneWithInputs), so strides, padding, dilations and channel layout are the model's own.
// A kernel gradient against a given output gradient d is GoMLX's own VJP of that clone, taken by
// differentiating ⟨conv(x, K'), d⟩ with respect to K' (its value does not matter: the
// convolution is linear in K').

// ConvInfo is what the direct path needs of a convolution whose kernel is a projected weight.
type ConvInfo struct {
	node       *Node // the ConvGeneral
	kernelDims []int
	kernelOut  int   // the kernel's output-channel axis (last channels-last, first channels-first)
	toMatrix   []int // kernel axes in matrix order: the others in order, then kernelOut
	fromMatrix []int // its inverse
	xBatch     int   // the input's batch axis
	yBatch     int   // the output's batch axis
	yChannels  int   // the output's channel axis
}

// kernelWithOutputs is the kernel's shape with k output channels.
func (c *ConvInfo) kernelWithOutputs(k int) []int {
	dims := slices.Clone(c.kernelDims)
	dims[c.kernelOut] = k
	return dims
}

// matrix views a kernel of this layout (any number of output channels k) as [m, k].
func (c *ConvInfo) matrix(kernel *Node) *Node {
	k := kernel.Shape().Dim(c.kernelOut)
	if c.kernelOut != kernel.Rank()-1 {
		kernel = TransposeAllAxes(kernel, c.toMatrix...)
	}
	return Reshape(kernel, kernel.Shape().Size()/k, k)
}

// kernelOf reshapes a matrix [m, k] into a kernel of this convolution's layout with k output
// channels.
func (c *ConvInfo) kernelOf(m2 *Node) *Node {
	dims := make([]int, len(c.toMatrix))
	for i, a := range c.toMatrix {
		dims[i] = c.kernelDims[a]
	}
	dims[len(dims)-1] = m2.Shape().Dim(1)
	k := Reshape(m2, dims...)
	if c.kernelOut == len(dims)-1 {
		return k
	}
	return TransposeAllAxes(k, c.fromMatrix...)
}

// convProduct is the direct path's view of a convolution whose kernel is w, or why there is none.
func convProduct(node, w *Node) (*Product, string) {
	if node.Inputs()[1] != w {
		return nil, "used as the input of a convolution, not its kernel"
	}
	params := upstream.ConvGeneralParams(node)
	for _, key := range []string{"InputBatch", "OutputBatch", "OutputChannels", "KernelOutputChannels", "channelGroupCount", "batchGroupCount"} {
		if _, ok := params[key]; !ok {
			return nil, "its convolution's description does not name " + key + " (an unknown GoMLX version?)"
		}
	}
	if g, b := params["channelGroupCount"], params["batchGroupCount"]; g != 1 || b != 1 {
		return nil, fmt.Sprintf("a grouped convolution (channel groups %d, batch groups %d): the direct path handles ungrouped ones", g, b)
	}
	c := newConvInfo(node, w.Shape().Dimensions, params)
	if c == nil {
		return nil, fmt.Sprintf("its kernel's output-channel axis (%d) is outside the kernel", params["KernelOutputChannels"])
	}
	out := c.kernelDims[c.kernelOut]
	m := w.Shape().Size() / out
	p := &Product{Output: node, X: node.Inputs()[0], Operand: w, M: m, N: out, Kind: "ConvGeneral", Conv: c}
	p.FromW = c.matrix
	p.ToW = c.kernelOf
	return p, ""
}

// newConvInfo reads the layout of a convolution whose kernel has kernelDims; nil if the
// kernel's output-channel axis is not one of its axes.
func newConvInfo(node *Node, kernelDims []int, params map[string]int) *ConvInfo {
	if out := params["KernelOutputChannels"]; out < 0 || out >= len(kernelDims) {
		return nil
	}
	c := &ConvInfo{node: node, kernelDims: slices.Clone(kernelDims), kernelOut: params["KernelOutputChannels"],
		xBatch: params["InputBatch"], yBatch: params["OutputBatch"], yChannels: params["OutputChannels"]}
	for a := range kernelDims {
		if a != c.kernelOut {
			c.toMatrix = append(c.toMatrix, a)
		}
	}
	c.toMatrix = append(c.toMatrix, c.kernelOut)
	c.fromMatrix = make([]int, len(c.toMatrix))
	for i, a := range c.toMatrix {
		c.fromMatrix[a] = i
	}
	return c
}

// apply is the convolution of x with the matrix m2 [m, k] as its kernel: k output channels.
func (c *ConvInfo) apply(x, m2 *Node) *Node {
	return c.node.CloneWithInputs(x, c.kernelOf(m2))
}

// kernelGradient is Σ patches(x)ᵀ·d as a matrix [m, k], for d shaped as this convolution's
// output with k channels: the kernel gradient of the k-channel convolution against d.
func (c *ConvInfo) kernelGradient(x, d *Node) *Node {
	probe := Zeros(x.Graph(), shapes.Make(x.DType(), c.kernelWithOutputs(d.Shape().Dim(c.yChannels))...))
	y := c.node.CloneWithInputs(x, probe)
	return c.matrix(Gradient(ReduceAllSum(Mul(y, StopGradient(d))), probe)[0])
}

// timesChannels contracts d's channel axis with q [n, k]: d with k channels, in d's layout.
func (c *ConvInfo) timesChannels(d, q *Node) *Node {
	out := DotGeneral(d, []int{c.yChannels}, nil, q, []int{0}, nil) // d's other axes, then k
	last := out.Rank() - 1
	if c.yChannels == last {
		return out
	}
	perm := make([]int, 0, out.Rank())
	for a := range last {
		if a == c.yChannels {
			perm = append(perm, last)
		}
		perm = append(perm, a)
	}
	return TransposeAllAxes(out, perm...)
}

// channelProduct contracts two outputs of this convolution (any channel counts ka, kb) over
// batch and positions: [ka, kb].
func (c *ConvInfo) channelProduct(a, b *Node) *Node {
	var axes []int
	for ax := range a.Rank() {
		if ax != c.yChannels {
			axes = append(axes, ax)
		}
	}
	return DotGeneral(a, axes, nil, b, axes, nil)
}

// ConvDirectStep is DirectStep for a convolution: the coefficient of ∂K₂ in basis and the
// tracking products, from the leading examples of the batch (at least minRows output
// positions), and the coefficient in the complement directions (nil: none; they join the basis
// in the same convolution). x and dy are in the state dtype.
func ConvDirectStep(c *ConvInfo, x, dy, basis, complement, omega *Node, side projector.Side, fraction float64, minRows int) (coef, compCoef *Node, tp projector.TrackingProducts) {
	batch := x.Shape().Dim(c.xBatch)
	perExample := max(1, dy.Shape().Size()/(batch*dy.Shape().Dim(c.yChannels)))
	keep := min(batch, max(int(math.Ceil(fraction*float64(batch))), (minRows+perExample-1)/perExample))
	xh, dyh := x, dy
	if keep < batch {
		xh = projector.SliceAlong(x, c.xBatch, 0, keep)
		dyh = projector.SliceAlong(dy, c.yBatch, 0, keep)
	}
	r := basis.Shape().Dim(1)
	full := basis
	if complement != nil {
		full = Concatenate([]*Node{basis, complement}, 1)
	}
	// The coefficient is summed over the tracked examples and the rest, each its own convolution:
	// the tracked part is the tracking's coefficient (the power product must be A·Aᵀ·Q for one A)
	// without computing it twice, the cost of the whole coefficient once.
	split := func(part func(x, dy *Node) *Node) (whole, head *Node) {
		if keep == batch {
			whole = part(x, dy)
			return whole, whole
		}
		head = part(xh, dyh)
		rest := part(projector.SliceAlong(x, c.xBatch, keep, batch), projector.SliceAlong(dy, c.yBatch, keep, batch))
		return Add(head, rest), head
	}
	if side == projector.Left { // Q [m, r]: Qᵀ·∂K₂ = conv(x, Q)ᵀ·∂y, [r, n]
		var trackCoef *Node
		coef, trackCoef = split(func(x, dy *Node) *Node { return c.channelProduct(c.apply(x, full), dy) })
		if complement != nil {
			coef, compCoef = projector.SplitComplement(coef, side, r)
			trackCoef, _ = projector.SplitComplement(trackCoef, side, r)
		}
		right := Concatenate([]*Node{Transpose(projector.UnitMax(trackCoef), 0, 1), omega}, 1) // [n, r+s]
		return coef, compCoef, projector.SplitTracking(c.kernelGradient(xh, c.timesChannels(dyh, right)), r)
	}
	// Q [n, r]: ∂K₂·Q is the kernel gradient against ∂y·Q, [m, r].
	var trackCoef *Node
	coef, trackCoef = split(func(x, dy *Node) *Node { return c.kernelGradient(x, c.timesChannels(dy, full)) })
	if complement != nil {
		coef, compCoef = projector.SplitComplement(coef, side, r)
		trackCoef, _ = projector.SplitComplement(trackCoef, side, r)
	}
	z := c.apply(xh, Concatenate([]*Node{projector.UnitMax(trackCoef), omega}, 1)) // r+s channels
	return coef, compCoef, projector.SplitTracking(c.channelProduct(dyh, z), r)
}

// ConvFLOPs is 2 × the output's size × the multiply-adds per output element (the kernel's size
// over its output channels) for a ConvGeneral node.
func ConvFLOPs(n *Node) int64 {
	kernel := n.Inputs()[1]
	axis, ok := upstream.ConvGeneralParams(n)["KernelOutputChannels"]
	if !ok || axis >= kernel.Rank() {
		return 0
	}
	perOutput := int64(kernel.Shape().Size() / kernel.Shape().Dim(axis))
	return 2 * int64(n.Shape().Size()) * perOutput
}
