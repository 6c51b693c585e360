// Package transformer is a small decoder-only transformer built from GoMLX's own layers
// (embeddings, multi-head self-attention with a causal mask, feed-forward, layer norm; pre-LN
// blocks), and a byte-level language-modelling task on a text corpus that runs offline.
package transformer

import (
	"fmt"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/ml/layers"
	"github.com/gomlx/gomlx/ml/layers/activation"
	"github.com/gomlx/gomlx/ml/layers/attention"
	"github.com/gomlx/gomlx/ml/layers/norm"
	"github.com/gomlx/gomlx/ml/model"
)

// Config sizes the model.
type Config struct {
	Vocab  int // token ids are in [0, Vocab): 256 for bytes
	Width  int // model (residual stream) width
	Depth  int // number of blocks
	Heads  int // attention heads; Width must be a multiple
	MLP    int // feed-forward hidden width
	SeqLen int // context length in tokens
	// UnfusedAttention computes attention from its parts instead of GoMLX's fused op (its
	// default where the backend has one): on the Go backend's AVX2 kernels the fused op is the
	// slower (docs/benchmarks.md). The two round differently (AdamW's eval loss after 1,000
	// steps: 2.411 against 2.442): compare runs of one build.
	UnfusedAttention bool
}

// DefaultConfig is small enough for a 2-core CPU: width 256, 2 blocks of 4 heads, MLP 1024,
// sequences of 128 bytes.
func DefaultConfig() Config {
	return Config{Vocab: 256, Width: 256, Depth: 2, Heads: 4, MLP: 1024, SeqLen: 128}
}

// Validate reports an impossible configuration with the fix.
func (c Config) Validate() error {
	switch {
	case c.Vocab < 2:
		return fmt.Errorf("transformer: vocabulary %d: need at least 2 tokens", c.Vocab)
	case c.Width < 1 || c.Depth < 1 || c.MLP < 1 || c.SeqLen < 2:
		return fmt.Errorf("transformer: width %d, depth %d, MLP %d and sequence length %d must be ≥ 1 (sequence ≥ 2)", c.Width, c.Depth, c.MLP, c.SeqLen)
	case c.Heads < 1 || c.Width%c.Heads != 0:
		return fmt.Errorf("transformer: width %d is not a multiple of %d heads: choose heads dividing the width", c.Width, c.Heads)
	}
	return nil
}

// ProjectionPattern matches the paths of every linear projection inside the blocks (attention
// query, key, value and output; the two feed-forward layers): the weights the subspace projector is
// meant for. Embeddings, norms and the output head are left out.
const ProjectionPattern = `^/block_\d+/(attention/.*(query|key|value|output)|ffn/(up|down))/dense/weights$`

// Logits is the model: tokens [batch, seq] (int32) → next-token logits [batch, seq, vocab].
func (c Config) Logits(scope *model.Scope, tokens *Node) *Node {
	g := tokens.Graph()
	dtype := dtypes.Float32
	seq := tokens.Shape().Dim(1)
	x := layers.Embedding(scope.In("tokens"), tokens, dtype, c.Vocab, c.Width)
	positions := scope.In("positions").VariableWithShape("embeddings", shapes.Make(dtype, 1, c.SeqLen, c.Width)).NodeValue(g)
	if seq != c.SeqLen {
		positions = Slice(positions, AxisRange(), AxisRange(0, seq))
	}
	x = Add(x, positions)
	for i := range c.Depth {
		block := scope.In("block_%d", i)
		// Pre-LN attention with a causal mask.
		h := norm.LayerNorm(block.In("attention_norm"), x, -1).Done()
		h = attention.SelfAttention(block.In("attention"), h, c.Heads, c.Width/c.Heads).
			WithCausalMask(true).WithFusion(!c.UnfusedAttention).Done()
		x = Add(x, h)
		// Pre-LN feed-forward.
		h = norm.LayerNorm(block.In("ffn_norm"), x, -1).Done()
		ffn := block.In("ffn")
		h = layers.DenseWithBias(ffn.In("up"), h, c.MLP)
		h = activation.Apply(activation.TypeGelu, h)
		h = layers.DenseWithBias(ffn.In("down"), h, c.Width)
		x = Add(x, h)
	}
	x = norm.LayerNorm(scope.In("final_norm"), x, -1).Done()
	return layers.DenseWithBias(scope.In("head"), x, c.Vocab)
}
