package hooks

import (
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/train"
	"github.com/gomlx/gomlx/ml/train/loss"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/stretchr/testify/require"
)

// TestPostHocFallback: a weight used by two products, or by a gather (an embedding table), cannot
// take the direct path: it is projected after a full backward pass, with the reason in the plan,
// and trains.
func TestPostHocFallback(t *testing.T) {
	modelFn := func(scope *model.Scope, x *Node) *Node {
		g := x.Graph()
		shared := scope.In("shared").VariableWithShape("weights", shapes.Make(dtypes.Float32, 12, 12)).NodeValue(g)
		h := Tanh(Add(MatMul(x, shared), MatMul(Tanh(x), shared))) // two products
		table := scope.In("table").VariableWithShape("embeddings", shapes.Make(dtypes.Float32, 12, 6)).NodeValue(g)
		idx := ConvertDType(Iota(g, shapes.Make(dtypes.Int32, x.Shape().Dim(0), 1), 0), dtypes.Int32)
		rows := Gather(table, ModScalar(idx, 12)) // [B, 6]
		return Add(ReduceSum(h, -1), ReduceSum(rows, -1))
	}
	store := model.NewStore()
	store.SetParam(model.ParamInitialSeed, int64(3))
	// Named explicitly: the default selection leaves out both (an embedding table, and a head).
	opt := Subspace(optimizer.Adam().LearningRate(0.01).Done()).Rank(2).WarmUp(3).
		Variables("/shared/weights", "/table/embeddings").Done()
	trainer := train.NewTrainer(testBackend(t), store, func(scope *model.Scope, x *Node) *Node {
		return InsertAxes(modelFn(scope, x), -1)
	}, loss.MeanSquaredError, opt, nil, nil)
	r := &run{store: store, trainer: trainer}
	first := r.step(t)
	var last float64
	for range 40 {
		last = r.step(t)
	}
	require.Less(t, last, first)
	plan := map[string]PlanEntry{}
	for _, e := range opt.Plan() {
		plan[e.Variable] = e
	}
	require.Equal(t, RoutePostHoc, plan["/shared/weights"].Route, opt.PlanString())
	require.Contains(t, plan["/shared/weights"].Why, "used by 2 ops")
	require.Equal(t, RoutePostHoc, plan["/table/embeddings"].Route, opt.PlanString())
	require.Contains(t, plan["/table/embeddings"].Why, "Gather")
	report, err := opt.Report(store)
	require.NoError(t, err)
	for _, v := range report.Variables {
		require.True(t, v.Valid, v.Path)
	}
	requireFinite(t, r.snapshot(t))
}
