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
// and below the side (rows unknown: no cost cap).
func TestAutoRank(t *testing.T) {
	for _, tc := range []struct{ m, n, want int }{
		{256, 256, 48}, {64, 64, 12}, {784, 256, 48}, {64, 128, 12}, {128, 2048, 24}, {144, 32, 6},
		{16, 16, 3}, {10, 30, 2}, {4, 100, 1}, {2, 2, 1}, {1024, 4096, 192},
	} {
		require.Equal(t, tc.want, AutoRank(tc.m, tc.n, 0), "%d×%d", tc.m, tc.n)
	}
}

// TestAutoRankCostCap: given the product's rows, the rank keeps the projector's work within
// AutoRankWorkShare of the ∂W it replaces; a large batch keeps the share, a wide matrix at a small batch does not, and
// a batch too small for any rank leaves the matrix out (0).
func TestAutoRankCostCap(t *testing.T) {
	require.Equal(t, 48, AutoRank(256, 256, 1024), "the transformer example's projections keep the share")
	for _, tc := range []struct{ m, n, rows int }{{1024, 1024, 256}, {1024, 1024, 32}, {4096, 4096, 512}} {
		r := AutoRank(tc.m, tc.n, tc.rows)
		require.Positive(t, r)
		require.Less(t, r, AutoRank(tc.m, tc.n, 0), "%v", tc)
		require.LessOrEqual(t, float64(ProjectorWork(tc.m, tc.n, tc.rows, r)), AutoRankWorkShare*float64(tc.rows)*float64(tc.m)*float64(tc.n), "%v", tc)
	}
	require.Zero(t, AutoRank(16, 16, 1), "one row per step of a small matrix: nothing to save")
}

// TestAutomaticRankInThePlan: without Rank, each matrix takes AutoRank of its own sides and
// product rows, a matrix too small for it is left out and says so, and the plan's header says
// the rank is automatic.
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
	// At 32 rows per step the square matrix's share (48) would cost the projector more than the
	// ∂W it replaces (its orthonormalisation grows as r²·256): the rank is capped where it does not.
	const rows = 32
	require.Greater(t, ProjectorWork(256, 256, rows, 48), int64(rows*256*256))
	capped := AutoRank(256, 256, rows)
	require.Less(t, capped, 48)
	require.LessOrEqual(t, float64(ProjectorWork(256, 256, rows, capped)), AutoRankWorkShare*float64(rows*256*256))
	require.Equal(t, map[string]int{"/wide/dense/weights": AutoRank(64, 256, rows), "/square/dense/weights": capped}, ranks, opt.PlanString())
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
	require.Equal(t, map[string]int{"/wide/dense/weights": 16, "/square/dense/weights": max(16, min(32, capped))}, ranks, bounded.PlanString())
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
