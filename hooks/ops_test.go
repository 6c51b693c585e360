package hooks

import (
	"fmt"
	"testing"

	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/layers"
	"github.com/gomlx/gomlx/ml/layers/activation"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/train"
	"github.com/gomlx/gomlx/ml/train/loss"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/stretchr/testify/require"
)

// stepOpsOfDeepMLP counts the ops of one step of a tanh MLP with depth 64×64 hidden layers,
// trained by opt.
func stepOpsOfDeepMLP(t *testing.T, opt *Optimizer, depth int) int {
	t.Helper()
	net := func(scope *model.Scope, x *Node) *Node {
		for i := range depth {
			x = activation.Apply(activation.TypeTanh, layers.DenseWithBias(scope.In("%s", fmt.Sprint("layer_", i)), x, 64))
		}
		return layers.DenseWithBias(scope.In("out"), x, 1)
	}
	trainer := train.NewTrainer(testBackend(t), model.NewStore(), net, loss.MeanSquaredError, opt, nil, nil)
	x, y := toyProblem(256, 64)
	_, err := trainer.TrainStep(train.Batch{Inputs: []*tensors.Tensor{x}, Labels: []*tensors.Tensor{y}})
	require.NoError(t, err)
	f, err := opt.StepFLOPs()
	require.NoError(t, err)
	return f.StepOps()
}

// TestOpsPerProjectedMatrix pins what each projected matrix adds to the step's op count (issue
// 28: on an accelerator each op the compiler cannot fuse is a kernel launch): the ops of four
// more 64×64 layers, projected at rank 8 with the default options, less what the same four
// layers add to the stock step, per matrix. The per-matrix reductions are batched by shape
// (batched.go); a change that adds per-matrix work shows here.
func TestOpsPerProjectedMatrix(t *testing.T) {
	perMatrix := func(newOpt func() *Optimizer) float64 {
		return float64(stepOpsOfDeepMLP(t, newOpt(), 8)-stepOpsOfDeepMLP(t, newOpt(), 4)) / 4
	}
	stock := perMatrix(func() *Optimizer { return Subspace(optimizer.Adam().Done()).Enabled(false).Done() })
	projected := perMatrix(func() *Optimizer { return Subspace(optimizer.Adam().Done()).Rank(8).Done() })
	t.Logf("ops per layer: stock %.0f, projected %.0f; the projector's per matrix: %.0f", stock, projected, projected-stock)
	require.LessOrEqual(t, projected-stock, 30.0, "217 before the stacking by shape (batched.go, prepareBases, rotateBatchStates, complementSteps), 91 before the per-matrix vectors (vectors.go), 63 before the coefficient stacks (stacks.go)")
}
