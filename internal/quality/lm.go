package quality

import (
	"math/rand/v2"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/layers"
	"github.com/gomlx/gomlx/ml/layers/activation"
	"github.com/gomlx/gomlx/ml/layers/attention"
	"github.com/gomlx/gomlx/ml/layers/norm"
	"github.com/gomlx/gomlx/ml/model"
)

// An attention language model: one pre-LN block (GoMLX's multi-head attention, whose query, key
// and value weights are [width, heads, head_dim] and output weights [heads, head_dim, width]),
// an MLP, a separate head. The task: a second-order Markov chain over 32 tokens whose next token
// is a fixed function of the previous two with probability 0.9, uniform otherwise.

const (
	lmVocab, lmWidth, lmHeads, lmMLP, lmSeq, lmBatch = 32, 64, 4, 256, 32, 32
	lmEvalSequences                                  = 256
	lmFollow                                         = 0.9
)

// lmShape is an attention LM's width, heads and MLP width.
type lmShape struct{ width, heads, mlp int }

// attentionLMOf is the attention LM at a shape: one pre-LN block over token and position
// embeddings, and a separate head.
func attentionLMOf(s lmShape) func(scope *model.Scope, inputs []*Node) []*Node {
	return func(scope *model.Scope, inputs []*Node) []*Node {
		x, _ := lmBody(scope, inputs[0], s)
		return []*Node{layers.DenseWithBias(scope.In("head"), x, lmVocab)}
	}
}

// tiedAttentionLMOf is the attention LM with its head tied to its token table (logits = x·Eᵀ),
// both at GoMLX's default initialisation (He: std √(2/width), 0.18 at width 64, where PyTorch's
// embeddings start at 1 and a GPT's at 0.02). A model of a shape the projector was not designed
// for: the table is read by a Gather and by the head's product, and the block's weights see
// inputs of that scale.
func tiedAttentionLMOf(s lmShape) func(scope *model.Scope, inputs []*Node) []*Node {
	return func(scope *model.Scope, inputs []*Node) []*Node {
		x, table := lmBody(scope, inputs[0], s)
		return []*Node{DotGeneral(x, []int{x.Rank() - 1}, nil, table, []int{1}, nil)} // x·Eᵀ: [batch, seq, vocab]
	}
}

// lmBody is the attention LM up to its head: token and position embeddings, one pre-LN block
// (GoMLX's multi-head attention and an MLP) and the final norm; it returns that and the token
// table ([vocab, width]).
func lmBody(scope *model.Scope, tokens *Node, s lmShape) (x, table *Node) {
	g := tokens.Graph()
	tokenScope := scope.In("tokens")
	x = layers.Embedding(tokenScope, tokens, dtypes.Float32, lmVocab, s.width)
	table = tokenScope.GetVariable("embeddings").NodeValue(g)
	pos := scope.In("positions").VariableWithShape("embeddings", shapes.Make(dtypes.Float32, 1, lmSeq, s.width)).NodeValue(g)
	x = Add(x, pos)
	block := scope.In("block")
	h := norm.LayerNorm(block.In("attention_norm"), x, -1).Done()
	h = attention.SelfAttention(block.In("attention"), h, s.heads, s.width/s.heads).WithCausalMask(true).Done()
	x = Add(x, h)
	h = norm.LayerNorm(block.In("mlp_norm"), x, -1).Done()
	mlp := block.In("mlp")
	h = layers.DenseWithBias(mlp.In("up"), h, s.mlp)
	h = activation.Apply(activation.TypeGelu, h)
	h = layers.DenseWithBias(mlp.In("down"), h, s.width)
	x = Add(x, h)
	return norm.LayerNorm(scope.In("final_norm"), x, -1).Done(), table
}

// markovTable is the chain's deterministic successor of each token pair; it is the same for
// every seed (the task), while the seed picks the sequences.
var markovTable = func() [lmVocab][lmVocab]int32 {
	rng := rand.New(rand.NewPCG(2026, 12))
	var t [lmVocab][lmVocab]int32
	for a := range t {
		for b := range t[a] {
			t[a][b] = int32(rng.IntN(lmVocab))
		}
	}
	return t
}()

func markovSequences(rng *rand.Rand, n int) (x, y *tensors.Tensor) {
	xs := make([]int32, n*lmSeq)
	ys := make([]int32, n*lmSeq)
	seq := make([]int32, lmSeq+1)
	for i := range n {
		seq[0], seq[1] = int32(rng.IntN(lmVocab)), int32(rng.IntN(lmVocab))
		for j := 2; j <= lmSeq; j++ {
			if rng.Float64() < lmFollow {
				seq[j] = markovTable[seq[j-2]][seq[j-1]]
			} else {
				seq[j] = int32(rng.IntN(lmVocab))
			}
		}
		copy(xs[i*lmSeq:], seq[:lmSeq])
		copy(ys[i*lmSeq:], seq[1:])
	}
	return tensors.FromFlatDataAndDimensions(xs, n, lmSeq), tensors.FromFlatDataAndDimensions(ys, n, lmSeq, 1)
}

// AttentionLM is the attention language model's task: rank width/8 on the block's six matrices.
func AttentionLM() Task {
	t := attentionLMTask("attention LM", lmShape{lmWidth, lmHeads, lmMLP}, lmWidth/8)
	t.MatrixWithin = 1.25 // measured 1.12 (1.257 against 1.125); the published method's step: 1.79
	return t
}

// TiedAttentionLM is the attention LM with its head tied to its token table, at GoMLX's default
// (He) initialisation: the held-out model on which the published method (GaLore, in PyTorch and
// here) lost 2.05× stock's eval loss at rank 8 and 1.04× at rank 32 (docs/rank.md). The
// block's six matrices are projected at rank 8; the table (read by a Gather and the head) is
// left out by the default selection, as the reference leaves it.
func TiedAttentionLM() Task {
	t := attentionLMTask("tied LM", lmShape{lmWidth, lmHeads, lmMLP}, lmWidth/8)
	t.Model = tiedAttentionLMOf(lmShape{lmWidth, lmHeads, lmMLP})
	t.MatrixWithin = 1.25 // measured 1.12 (1.367 against 1.220); the published method's step: 1.92
	return t
}

// WideAttentionLM is the attention LM at width 256 (4 heads of 64, an MLP of 1,024), outside
// the suite: a model where the one option projects GoMLX's own attention weights (rank-3
// [width, heads, head_dim] and [heads, head_dim, width]) and the MLP's, at rank 16 (the least
// automatic rank, with 32 complement directions) with 1,024 rows per step; the reference and matrix mode
// take the same rank.
func WideAttentionLM() Task {
	t := attentionLMTask("wide attention LM", lmShape{4 * lmWidth, lmHeads, 4 * lmMLP}, lmWidth/4)
	t.Skip = map[string]string{Temporal: "a temporal basis of 65,536-value gradients and more (the plan recommends matrix mode for them)"}
	return t
}

func attentionLMTask(name string, s lmShape, rank int) Task {
	return Task{
		Name:    name,
		Model:   attentionLMOf(s),
		Batch:   seededBatches(markovSequences, lmBatch),
		Eval:    seededEval(markovSequences, lmEvalSequences),
		Steps:   300,
		Seeds:   3,
		LR:      3e-3,
		Rank:    rank,
		Project: `^/block/(attention/.*(query|key|value|output)|mlp/(up|down))/dense/weights$`,
		View: func(path string, dims []int) (int, int) {
			if len(dims) == 3 && dims[0] != s.width { // output: [heads, head_dim, width]
				return dims[0] * dims[1], dims[2]
			}
			return rows(dims)
		},
	}
}
