package direct

import (
	"slices"
	"strings"

	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/ml/model"
)

// Some weights are matrices whose gradients a low-rank basis serves badly, and the default
// selection leaves them out (a selection by name, Variables or Matching, can still project them):
//
//   - Embedding tables, read by a Gather: a step's gradient touches only the rows of the tokens
//     in the batch; a rank-r basis on the vocabulary side updates r mixtures of tokens, so most
//     tokens never learn. Projecting the token table of a one-block attention LM at rank 8 took its
//     eval loss from 1.46 to 2.31 (internal/quality, seed 1).
//   - Output heads, the last weight products before the loss: a basis on their output side lets
//     the logits move in only r directions of the classes. Projecting the head of the same model
//     took its eval loss to 2.19. GaLore leaves both out too (it projects the blocks' linear layers).

// Roles finds, once per step graph, the roles of its weights.
type Roles struct {
	g          *Graph
	weights    map[*Node]*model.Variable // each weight's value node, and reshapes of it
	numWeights int
	kernels    map[*model.Variable]bool // weights that are a convolution's kernel
}

// NewRoles reads the roles of the trainable variables from the step graph g.
func NewRoles(g *Graph, trainables []*model.Variable) *Roles {
	r := &Roles{g: g, weights: map[*Node]*model.Variable{}, kernels: map[*model.Variable]bool{}}
	for _, v := range trainables {
		if v.Shape().Rank() >= 2 {
			r.weights[v.NodeValue(g)] = v
			r.numWeights++
		}
	}
	for _, n := range g.Nodes() { // in graph order: a reshape of a weight precedes its uses
		switch n.Type() {
		case NodeTypeReshape:
			if v, ok := r.weights[n.Inputs()[0]]; ok {
				r.weights[n] = v
			}
		case NodeTypeConvGeneral:
			if v, ok := r.weights[n.Inputs()[1]]; ok {
				r.kernels[v] = true
			}
		}
	}
	return r
}

// Of names why the default selection leaves v out, or "" if it does not.
func (r *Roles) Of(v *model.Variable) string {
	w := v.NodeValue(r.g)
	for _, n := range r.g.Nodes()[w.Id()+1:] {
		if (n.Type() == NodeTypeGather || n.Type() == NodeTypeQuantizedEmbeddingLookup) && slices.Contains(n.Inputs(), w) {
			return "an embedding table (read by a Gather): its gradient only touches the batch's rows"
		}
	}
	if r.isHead(w, v) {
		return "the output head (no other weight's product follows it): a low-rank basis would move the outputs in only Rank directions"
	}
	if readers := elementwiseReaders(r.g, w); readers != "" {
		what := "a gain or offset"
		if strings.Contains(readers, "LayerNorm") || strings.Contains(readers, "BatchNorm") {
			what = "a normalization gain or offset"
		}
		return what + " (read only elementwise, by " + readers + "): it scales or shifts activations, and no product of its gradient is there to save"
	}
	return ""
}

// elementwiseReaders names the ops that read w against activations when none of w's readers,
// followed through ops that only reshape, broadcast, transpose or convert it, is a product or a
// gather: w then scales or shifts activations (norm.Layer's and norm.Batch's gains and offsets,
// of any rank), and its gradient is a reduction of ∂y over the batch, not a product a basis
// could shrink. It returns "" otherwise, or when nothing reads w against activations.
func elementwiseReaders(g *Graph, w *Node) string {
	reached := map[*Node]bool{w: true}
	var kinds []string
	for _, n := range g.Nodes()[w.Id()+1:] {
		if !slices.ContainsFunc(n.Inputs(), func(in *Node) bool { return reached[in] }) {
			continue
		}
		switch n.Type() {
		case NodeTypeReshape, NodeTypeBroadcastInDim, NodeTypeTranspose, NodeTypeConvertDType, NodeTypeIdentity:
			reached[n] = true // still w, in another shape
		case NodeTypeDotGeneral, NodeTypeFusedDense, NodeTypeConvGeneral, NodeTypeGather, NodeTypeQuantizedEmbeddingLookup,
			NodeTypeFusedQuantizedDense, NodeTypeFusedAttentionQKVProjection, NodeTypeFusedScaledDotProductAttention:
			return ""
		default:
			// Against activations: another operand larger than a scalar (a function of w
			// alone, such as a penalty's Square, is not how a gain is read).
			against := slices.ContainsFunc(n.Inputs(), func(in *Node) bool { return !reached[in] && in.Shape().Size() > 1 })
			if kind := n.Type().String(); against && !slices.Contains(kinds, kind) {
				kinds = append(kinds, kind)
			}
		}
	}
	return strings.Join(kinds, ", ")
}

// isProduct says whether a node multiplies its operands (a layer's weight meets its input there).
func isProduct(n *Node) bool {
	switch n.Type() {
	case NodeTypeDotGeneral, NodeTypeFusedDense, NodeTypeConvGeneral:
		return true
	}
	return false
}

// IsConvKernel says whether v is the kernel of a convolution (its value, or a reshape of it, is
// a ConvGeneral's kernel operand).
func (r *Roles) IsConvKernel(v *model.Variable) bool { return r.kernels[v] }

// isHead says whether w's products feed the loss with no product of another trainable weight
// after them: w belongs to the model's last layer. A model with a single weight has no head in
// this sense (there is nothing else to project).
func (r *Roles) isHead(w *Node, v *model.Variable) bool {
	if r.numWeights < 2 {
		return false
	}
	reached := map[*Node]bool{w: true}
	usedByProduct := false
	for _, n := range r.g.Nodes()[w.Id()+1:] {
		fromW, fromOther := false, false
		for _, in := range n.Inputs() {
			fromW = fromW || reached[in]
			if o, ok := r.weights[in]; ok && o != v {
				fromOther = true
			}
		}
		if !fromW {
			continue
		}
		reached[n] = true
		if isProduct(n) {
			if fromOther {
				return false // another weight's product runs on w's output
			}
			usedByProduct = true
		}
	}
	return usedByProduct
}
