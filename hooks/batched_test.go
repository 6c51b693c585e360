package hooks

import (
	"fmt"
	"math"
	"testing"

	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/ml/layers"
	"github.com/gomlx/gomlx/ml/layers/activation"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/train"
	"github.com/gomlx/gomlx/ml/train/loss"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gradsub/gradsub/hooks/internal/step"
	"github.com/stretchr/testify/require"
)

// deepRun is the toy problem on a tanh MLP 12 → 16 → 16 → 16 → 1: two 16×16 matrices of one
// shape, which the step tracks, rotates and sizes as one stack.
func deepRun(t *testing.T, store *model.Store, opt optimizer.Interface) *run {
	return deepRunOf(t, store, opt, 16, 16, 16)
}

// deepRunOf is the toy problem on a tanh MLP with the given hidden widths.
func deepRunOf(t *testing.T, store *model.Store, opt optimizer.Interface, widths ...int) *run {
	net := func(scope *model.Scope, x *Node) *Node {
		for i, w := range widths {
			x = activation.Apply(activation.TypeTanh, layers.DenseWithBias(scope.In("%s", fmt.Sprint("layer_", i)), x, w))
		}
		return layers.DenseWithBias(scope.In("out"), x, 1)
	}
	store.SetParam(model.ParamInitialSeed, int64(7))
	return &run{store: store, trainer: train.NewTrainer(testBackend(t), store, net, loss.MeanSquaredError, opt, nil, nil)}
}

func deepOptimizer() *Optimizer {
	policy := DefaultPolicy()
	policy.DriftMargin = 0
	policy.CurvatureFactor = 1.5
	return Subspace(optimizer.Adam().LearningRate(0.01).Done()).Rank(3).WarmUp(6).Policy(policy).CheckEvery(4).ResidualThreshold(0.05).Done()
}

// TestStackedGroupsStepAsEachMatrixAlone: the batched step (same-shaped matrices tracked,
// rotated and sized as one stack) trains as the step of each matrix alone, to float64 rounding,
// and
// reports the same residuals.
func TestStackedGroupsStepAsEachMatrixAlone(t *testing.T) {
	// 16×16 and 16×32 share a basis shape ([16, 3]) but not a coefficient shape: tracked as one
	// stack, their state rotates in two.
	for _, widths := range [][]int{{16, 16, 16}, {16, 16, 32, 16}} {
		t.Run(fmt.Sprint(widths), func(t *testing.T) { testStackedGroupsStepAsEachMatrixAlone(t, widths) })
	}
}

func testStackedGroupsStepAsEachMatrixAlone(t *testing.T, widths []int) {
	const steps = 30
	// A stack draws its complement's directions in one draw (prepareBases): here each matrix
	// draws from its own seed in both runs, so that they compare the batching alone.
	step.DrawEachAlone = true
	defer func() { step.DrawEachAlone = false }()
	trace := func(alone bool) ([]float64, Report) {
		step.TrackEachAlone = alone
		defer func() { step.TrackEachAlone = false }()
		opt := deepOptimizer()
		r := deepRunOf(t, model.NewStore(), opt, widths...)
		r.float64 = true // the comparison measures the batching, not float32 rounding
		var losses []float64
		for range steps {
			losses = append(losses, r.step(t))
		}
		report, err := opt.Report(r.store)
		require.NoError(t, err)
		return losses, report
	}
	batched, batchedReport := trace(false)
	alone, aloneReport := trace(true)
	for i := range batched {
		require.InDelta(t, alone[i], batched[i], 1e-9*math.Abs(alone[i]), "step %d", i+1)
	}
	require.Equal(t, aloneReport.Refreshes, batchedReport.Refreshes)
	require.Len(t, batchedReport.Variables, len(aloneReport.Variables))
	for i, v := range batchedReport.Variables {
		require.InDelta(t, aloneReport.Variables[i].Residual, v.Residual, 1e-9, v.Path)
	}
}

// TestCheckpointResumesStackedGroupsExactly: TestCheckpointResumesExactly on a model whose
// matrices are stacked by shape.
func TestCheckpointResumesStackedGroupsExactly(t *testing.T) {
	newRun := func(store *model.Store, opt *Optimizer) *run { return deepRun(t, store, opt) }
	store, opt := requireResumesExactly(t, newRun, deepOptimizer, 40, 20)
	report, err := opt.Report(store)
	require.NoError(t, err)
	require.Positive(t, report.Refreshes, "the resumed half must include refreshes")
}
