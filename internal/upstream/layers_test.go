package upstream

import (
	"testing"

	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/layers"
	"github.com/gomlx/gomlx/ml/layers/attention"
	"github.com/gomlx/gomlx/ml/layers/norm"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/train"
	"github.com/gomlx/gomlx/ml/train/loss"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gradsub/gradsub/internal/backends"
	"github.com/stretchr/testify/require"
)

// sequenceBatch is a fixed batch of 4 sequences of 6 vectors of 16, with one target each.
func sequenceBatch() train.Batch {
	xs, ys := make([]float32, 4*6*16), make([]float32, 4)
	for i := range xs {
		xs[i] = float32((i*7)%11)/11 - 0.5
	}
	for i := range ys {
		ys[i] = float32(i) / 4
	}
	return train.Batch{Inputs: []*tensors.Tensor{tensors.FromFlatDataAndDimensions(xs, 4, 6, 16)}, Labels: []*tensors.Tensor{tensors.FromFlatDataAndDimensions(ys, 4, 1)}}
}

// trainOneStep builds a trainer on the Go backend for modelFn and trains one step.
func trainOneStep(t *testing.T, modelFn func(scope *model.Scope, x *Node) *Node) error {
	backend, err := backends.New("go")
	require.NoError(t, err)
	trainer := train.NewTrainer(backend, model.NewStore(), modelFn, loss.MeanSquaredError, optimizer.Adam().Done(), nil, nil)
	_, err = trainer.TrainStep(sequenceBatch())
	return err
}

// TestGoBackendHasNoBatchNormForTraining pins a limit of GoMLX v0.28.16's Go backend: it does
// not implement BatchNormForTraining, so norm.BatchNorm fails in a training step (cifar's CNN
// example, whose default normalization is batch norm, stops there). The workaround is a layer
// norm (the CNN example's `-set cnn_normalization=layer`), which the Go backend runs. When this
// test fails, an upgrade added the op: docs/backends.md's row can go.
func TestGoBackendHasNoBatchNormForTraining(t *testing.T) {
	head := func(scope *model.Scope, h *Node) *Node {
		return layers.DenseWithBias(scope.In("output"), ReduceMean(h, 1), 1)
	}
	err := trainOneStep(t, func(scope *model.Scope, x *Node) *Node {
		return head(scope, norm.BatchNorm(scope.In("batch_norm"), x, -1).Done())
	})
	// `sorry, op "BatchNormForTraining" not implemented in the "go" backend yet`
	require.ErrorContains(t, err, `op "BatchNormForTraining" not implemented in the "go" backend`)
	require.NoError(t, trainOneStep(t, func(scope *model.Scope, x *Node) *Node {
		return head(scope, norm.LayerNorm(scope.In("layer_norm"), x, -1).Done())
	}), "the workaround: a layer norm")
}

// TestFusedAttentionNeedsEqualKeyAndValueHeads pins a limit of GoMLX v0.28.16: the fused
// multi-head attention (the default) fails when the value head differs in size from the key's
// (WithValueHeadDim). The workaround is the decomposed attention, WithFusion(false). When this
// test fails, an upgrade fixed the fused path: docs/backends.md's row can go.
func TestFusedAttentionNeedsEqualKeyAndValueHeads(t *testing.T) {
	attend := func(fused bool) func(scope *model.Scope, x *Node) *Node {
		return func(scope *model.Scope, x *Node) *Node {
			h := attention.MultiHeadAttention(scope.In("attention"), x, x, x, 2, 4).WithValueHeadDim(8).WithFusion(fused).Done()
			return layers.DenseWithBias(scope.In("output"), ReduceMean(h, 1), 1)
		}
	}
	err := trainOneStep(t, attend(true))
	// "total requested size 384 (dimensions=[4 6 16]) doesnt match original size 192
	// (dimensions [4 6 2 4])": the fused path reshapes the value heads with the key's size.
	require.ErrorContains(t, err, "doesnt match original size")
	require.NoError(t, trainOneStep(t, attend(false)), "the workaround: WithFusion(false)")
}
