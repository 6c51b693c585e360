package hooks

import (
	"fmt"
	"math"
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/ml/layers"
	"github.com/gomlx/gomlx/ml/layers/activation"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/train"
	"github.com/gomlx/gomlx/ml/train/loss"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/stretchr/testify/require"
)

// TestJoinGroupsJoinWhatConcatenateCan: tensors that differ only in their first axis share a
// group, in first-seen order; scalars and tensors over the limit stay alone.
func TestJoinGroupsJoinWhatConcatenateCan(t *testing.T) {
	g := NewGraph(testBackend(t), "join")
	xs := []*Node{
		Zeros(g, shapeOf(2, 3)), Zeros(g, shapeOf(5, 3)), Zeros(g, shapeOf(2, 4)),
		Zeros(g, shapeOf(7)), Zeros(g, shapeOf()), Zeros(g, shapeOf(9)), Zeros(g, shapeOf(100, 3)),
	}
	require.Equal(t, [][]int{{0, 1}, {2}, {3, 5}, {4}, {6}}, joinGroups(xs, 100))
	require.Equal(t, [][]int{{0, 1, 6}, {2}, {3, 5}, {4}}, joinGroups(xs, 0))
}

// TestAllFiniteBatchedFindsAnyBadTensor: joined, the check still fails on a NaN, an Inf or an
// overflowing square in any one tensor, whichever group it falls in.
func TestAllFiniteBatchedFindsAnyBadTensor(t *testing.T) {
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	check := func(bad int, value float32) bool {
		out, err := ExecOnceN(testBackend(t), func(a, b, c, s *Node) []*Node {
			return []*Node{allFiniteBatched(a.Graph(), []*Node{a, b, c, s})}
		}, pick(bad == 0, value, []float32{1, 2}), pick(bad == 1, value, []float32{3, 4, 5}),
			[][]float32{{1}, {pickScalar(bad == 2, value)}}, pickScalar(bad == 3, value))
		require.NoError(t, err)
		return out[0].Value().(bool)
	}
	require.True(t, check(-1, 0), "all finite")
	for bad := range 4 {
		for _, v := range []float32{nan, inf, 2e19} {
			require.False(t, check(bad, v), "tensor %d holds %g", bad, v)
		}
	}
	out, err := ExecOnceN(testBackend(t), func(x *Node) []*Node { return []*Node{allFiniteBatched(x.Graph(), nil)} }, float32(0))
	require.NoError(t, err)
	require.True(t, out[0].Value().(bool), "nothing to check")
}

// TestRowDotsAreThePerTensorSums: the step-length rule's batched sums equal the per-matrix ones.
func TestRowDotsAreThePerTensorSums(t *testing.T) {
	a := [][]float32{{1, 2}, {3, 4}}
	b := [][]float32{{-1, 0.5}, {2, 1}}
	c := [][]float32{{0, 1}, {1, 0}}
	out, err := ExecOnceN(testBackend(t), func(a, b, c *Node) []*Node {
		xs := []*Node{a, b, c}
		rows := rowsOf(xs, []int{0, 1, 2})
		return []*Node{rowDots(rows, rows), stacked(xs), unstacked(stacked(xs))[1]}
	}, a, b, c)
	require.NoError(t, err)
	require.Equal(t, []float32{30, 6.25, 2}, out[0].Value())
	require.Equal(t, [][][]float32{a, b, c}, out[1].Value())
	require.Equal(t, b, out[2].Value())
}

func shapeOf(dims ...int) shapes.Shape { return shapes.Make(dtypes.Float32, dims...) }

func pick(bad bool, value float32, ok []float32) []float32 {
	if bad {
		return append(append([]float32(nil), ok...), value)[1:]
	}
	return ok
}

func pickScalar(bad bool, value float32) float32 {
	if bad {
		return value
	}
	return 1
}

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
	trace := func(alone bool) ([]float64, Report) {
		trackEachAlone = alone
		defer func() { trackEachAlone = false }()
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
