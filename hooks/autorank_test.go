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

// TestAutoRank: a share of the smaller side rounded to the product tile, never below
// MinAutoRank, and 0 (left out) where that is not below the side (rows unknown: no cost cap).
func TestAutoRank(t *testing.T) {
	for _, tc := range []struct{ m, n, want int }{
		{256, 256, 48}, {784, 256, 48}, {512, 512, 96}, {1024, 4096, 192},
		{64, 64, 32}, {64, 128, 32}, {128, 2048, 32}, {33, 100, 32},
		{144, 32, 0}, {32, 32, 0}, {16, 16, 0}, {4, 100, 0}, {2, 2, 0},
	} {
		require.Equal(t, tc.want, AutoRank(tc.m, tc.n, 0), "%d×%d", tc.m, tc.n)
	}
	require.Equal(t, 3, shareRank(16), "a matrix the user named without a Rank: the share alone")
}

// TestAutoRankCostCap: given the product's rows, the rank keeps the projector's work within
// AutoRankWorkShare of the ∂W it replaces, and never goes below MinAutoRank: a large batch keeps
// the share, a wide matrix at a moderate batch is capped, and where MinAutoRank itself costs more
// the matrix is left out (0).
func TestAutoRankCostCap(t *testing.T) {
	require.Equal(t, 48, AutoRank(256, 256, 1024), "the transformer example's projections keep the share")
	for _, tc := range []struct{ m, n, rows int }{{1024, 1024, 256}, {4096, 4096, 512}, {256, 256, 256}} {
		r := AutoRank(tc.m, tc.n, tc.rows)
		require.GreaterOrEqual(t, r, MinAutoRank, "%v", tc)
		require.Less(t, r, AutoRank(tc.m, tc.n, 0), "%v", tc)
		require.LessOrEqual(t, float64(ProjectorWork(tc.m, tc.n, tc.rows, r)), AutoRankWorkShare*float64(tc.rows)*float64(tc.m)*float64(tc.n), "%v", tc)
	}
	// The lift alone is r·m·n: below about 43 rows per step, 32 directions cost more than 3/4 of ∂W.
	require.Zero(t, AutoRank(1024, 1024, 32), "a wide matrix at batch 32")
	require.Zero(t, AutoRank(64, 256, 512), "a 64-side matrix: 32 directions' coefficient alone is 5/8 of ∂W")
	require.Zero(t, AutoRank(16, 16, 1))
}

// TestAutomaticRankInThePlan: without Rank, each matrix takes AutoRank of its own sides and
// product rows; a matrix the automatic rank leaves out says why, and the plan's header says the
// rank is automatic. A model where it leaves out every matrix trains as stock, with the guard.
func TestAutomaticRankInThePlan(t *testing.T) {
	const rows = 256
	opt := Subspace(optimizer.Adam().Done()).Done()
	store := model.NewStore()
	trainer := train.NewTrainer(testBackend(t), store, deepMLP, loss.MeanSquaredError, opt, nil, nil)
	x, y := toyProblem(rows, 64)
	_, err := trainer.TrainStep(train.Batch{Inputs: []*tensors.Tensor{x}, Labels: []*tensors.Tensor{y}})
	require.NoError(t, err)
	ranks := map[string]int{}
	for _, e := range opt.Plan() {
		if e.Route != RouteFull {
			ranks[e.Variable] = e.Rank
		}
	}
	// At 256 rows per step the square matrix's share (48) would cost the projector more than 3/4
	// of the ∂W it replaces (its orthonormalisation grows as r²·256): it is capped at 32. The
	// [64, 256] matrix is left out: 32 directions' coefficient alone is 5/8 of its ∂W.
	require.Greater(t, float64(ProjectorWork(256, 256, rows, 48)), AutoRankWorkShare*float64(rows*256*256))
	require.Equal(t, map[string]int{"/square/dense/weights": 32}, ranks, opt.PlanString())
	plan := opt.PlanString()
	require.Contains(t, plan, "automatic rank")
	require.Contains(t, plan, "at 256 rows per step, the automatic rank's least (32) would cost the projector more than 0.75 of ∂W: left out")
	require.Contains(t, plan, "its smaller side (8) is ≤ 32")
	require.True(t, strings.Contains(plan, "/head/dense/weights"), plan)

	// With rank bounds, the automatic rank starts within them.
	bounded := Subspace(optimizer.Adam().Done()).RankBounds(16, 32).Done()
	store = model.NewStore()
	trainer = train.NewTrainer(testBackend(t), store, deepMLP, loss.MeanSquaredError, bounded, nil, nil)
	_, err = trainer.TrainStep(train.Batch{Inputs: []*tensors.Tensor{x}, Labels: []*tensors.Tensor{y}})
	require.NoError(t, err)
	ranks = map[string]int{}
	for _, e := range bounded.Plan() {
		if e.Route != RouteFull {
			ranks[e.Variable] = e.Rank
		}
	}
	require.Equal(t, map[string]int{"/wide/dense/weights": 16, "/square/dense/weights": 32}, ranks, bounded.PlanString())

	// At batch 8 nothing pays for 32 directions: the model trains as with Adam alone (the guard
	// still on), and the plan and the Report say so.
	small := Subspace(optimizer.Adam().Done()).Done()
	store = model.NewStore()
	trainer = train.NewTrainer(testBackend(t), store, deepMLP, loss.MeanSquaredError, small, nil, nil)
	x, y = toyProblem(8, 64)
	var losses []float64
	for range 20 {
		metrics, err := trainer.TrainStep(train.Batch{Inputs: []*tensors.Tensor{x}, Labels: []*tensors.Tensor{y}})
		require.NoError(t, err)
		losses = append(losses, float64(metrics[0].Value().(float32)))
	}
	require.Less(t, losses[len(losses)-1], losses[0], "it trains")
	for _, e := range small.Plan() {
		require.Equal(t, RouteFull, e.Route, small.PlanString())
	}
	require.Contains(t, small.PlanString(), "no variable projected")
	report, err := small.Report(store)
	require.NoError(t, err)
	require.Contains(t, report.String(), "no variable projected")
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
	step := func(store *model.Store, opt *Optimizer, batch int) error {
		trainer := train.NewTrainer(testBackend(t), store, deepMLP, loss.MeanSquaredError, opt, nil, nil)
		x, y := toyProblem(batch, 64)
		_, err := trainer.TrainStep(train.Batch{Inputs: []*tensors.Tensor{x}, Labels: []*tensors.Tensor{y}})
		return err
	}
	store := model.NewStore()
	require.NoError(t, step(store, Subspace(optimizer.Adam().Done()).Rank(8).Done(), 256))
	err := step(store, Subspace(optimizer.Adam().Done()).Done(), 256)
	require.ErrorContains(t, err, "/square/dense/weights's basis at rank 8 (from a checkpoint), but the automatic rank is 32")
	require.ErrorContains(t, err, "resume with Rank(8)")

	// At a batch where the automatic rank leaves every matrix out, the plan says that the
	// stored bases are unused, and how to keep projecting.
	store = model.NewStore()
	require.NoError(t, step(store, Subspace(optimizer.Adam().Done()).Rank(8).Done(), 256))
	auto := Subspace(optimizer.Adam().Done()).Done()
	require.NoError(t, step(store, auto, 8))
	require.Contains(t, auto.PlanString(), "/square/dense/weights")
	require.Contains(t, auto.PlanString(), "the store holds its basis at rank 8 (from a checkpoint), unused now: resume with Rank(8) to go on projecting it")
}
