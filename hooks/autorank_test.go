package hooks

import (
	"strings"
	"testing"

	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/layers"
	"github.com/gomlx/gomlx/ml/layers/activation"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/train"
	"github.com/gomlx/gomlx/ml/train/loss"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/stretchr/testify/require"

	. "github.com/gomlx/gomlx/core/graph"
)

// TestAutoRank: a share of the smaller side, at least 1, rounded to the product tile from 8 up,
// and below the side.
func TestAutoRank(t *testing.T) {
	for _, tc := range []struct{ m, n, want int }{
		{256, 256, 48}, {64, 64, 12}, {784, 256, 48}, {64, 128, 12}, {128, 2048, 24}, {144, 32, 6},
		{16, 16, 3}, {10, 30, 2}, {4, 100, 1}, {2, 2, 1}, {1024, 4096, 192},
	} {
		require.Equal(t, tc.want, AutoRank(tc.m, tc.n), "%d×%d", tc.m, tc.n)
	}
}

// TestAutomaticRankInThePlan: without Rank, each matrix takes AutoRank of its own sides, a matrix
// too small for it is left out and says so, and the plan's header says the rank is automatic.
func TestAutomaticRankInThePlan(t *testing.T) {
	opt := Subspace(optimizer.Adam().Done()).Done()
	store := model.NewStore()
	trainer := train.NewTrainer(testBackend(t), store, deepMLP, loss.MeanSquaredError, opt, nil, nil)
	x, y := toyProblem(32, 64)
	_, err := trainer.TrainStep(train.Batch{Inputs: []*tensors.Tensor{x}, Labels: []*tensors.Tensor{y}})
	require.NoError(t, err)
	ranks := map[string]int{}
	for _, e := range opt.Plan() {
		if e.Route != RouteFull {
			ranks[e.Variable] = e.Rank
		}
	}
	require.Equal(t, map[string]int{"/wide/dense/weights": 12, "/square/dense/weights": 48}, ranks, opt.PlanString())
	plan := opt.PlanString()
	require.Contains(t, plan, "automatic rank")
	require.Contains(t, plan, "too small for an automatic rank")
	require.True(t, strings.Contains(plan, "/head/dense/weights"), plan)

	// With rank bounds, the automatic rank starts within them.
	bounded := Subspace(optimizer.Adam().Done()).RankBounds(16, 32).Done()
	store = model.NewStore()
	trainer = train.NewTrainer(testBackend(t), store, deepMLP, loss.MeanSquaredError, bounded, nil, nil)
	x, y = toyProblem(32, 64)
	_, err = trainer.TrainStep(train.Batch{Inputs: []*tensors.Tensor{x}, Labels: []*tensors.Tensor{y}})
	require.NoError(t, err)
	ranks = map[string]int{}
	for _, e := range bounded.Plan() {
		if e.Route != RouteFull {
			ranks[e.Variable] = e.Rank
		}
	}
	require.Equal(t, map[string]int{"/wide/dense/weights": 16, "/square/dense/weights": 32}, ranks, bounded.PlanString())
}

// deepMLP has matrices of several sizes: [64, 256], [256, 256], [256, 8] and a head.
func deepMLP(scope *model.Scope, x *Node) *Node {
	h := activation.Apply(activation.TypeTanh, layers.DenseWithBias(scope.In("wide"), x, 256))
	h = activation.Apply(activation.TypeTanh, layers.DenseWithBias(scope.In("square"), h, 256))
	h = activation.Apply(activation.TypeTanh, layers.DenseWithBias(scope.In("narrow"), h, 8))
	return layers.DenseWithBias(scope.In("head"), h, 1)
}

// TestResumeAtAnotherRankThanTheAutomaticOne: a checkpoint at Rank(8) resumed without Rank says
// that the automatic rank differs, and how to resume.
func TestResumeAtAnotherRankThanTheAutomaticOne(t *testing.T) {
	store := model.NewStore()
	step := func(opt *Optimizer) error {
		trainer := train.NewTrainer(testBackend(t), store, deepMLP, loss.MeanSquaredError, opt, nil, nil)
		x, y := toyProblem(32, 64)
		_, err := trainer.TrainStep(train.Batch{Inputs: []*tensors.Tensor{x}, Labels: []*tensors.Tensor{y}})
		return err
	}
	require.NoError(t, step(Subspace(optimizer.Adam().Done()).Rank(8).Done()))
	err := step(Subspace(optimizer.Adam().Done()).Done())
	require.ErrorContains(t, err, "basis at rank 8 (from a checkpoint), but the automatic rank is")
	require.ErrorContains(t, err, "resume with Rank(8)")
}
