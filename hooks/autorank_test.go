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

// TestAutoRank: a share of the smaller side rounded to the product tile, never below the least
// rank, and 0 (left out) where that is not below the side (rows unknown: no cost cap); with the
// complement (the default) 1/64 and 16, without it 3/16 and 32.
func TestAutoRank(t *testing.T) {
	for _, tc := range []struct{ m, n, want, plain int }{
		{256, 256, 16, 48}, {784, 256, 16, 48}, {512, 512, 16, 96}, {1024, 4096, 16, 192}, {2048, 2048, 32, 384}, {4096, 4096, 64, 768},
		{64, 64, 16, 32}, {64, 128, 16, 32}, {128, 2048, 16, 32}, {33, 100, 16, 32},
		{144, 32, 16, 0}, {32, 32, 16, 0}, {17, 40, 16, 0}, {16, 16, 0, 0}, {4, 100, 0, 0}, {2, 2, 0, 0},
	} {
		require.Equal(t, tc.want, AutoRank(tc.m, tc.n, 0), "%d×%d", tc.m, tc.n)
		require.Equal(t, tc.plain, PlainAutoRank(tc.m, tc.n, 0), "%d×%d without the complement", tc.m, tc.n)
	}
	require.Equal(t, 3, shareRank(16, PlainRankShare), "a matrix the user named without a Rank: the share alone")
	require.Equal(t, 1, shareRank(16, NamedRankShare))
	require.Equal(t, 32, Subspace(optimizer.Adam().Done()).Variables("w").namedRank(512), "named without a Rank: 1/16 of the side")
	adam, sgd := optimizer.Adam().Done(), optimizer.StochasticGradientDescent().Done()
	require.Equal(t, 16, Subspace(adam).rankOf(256, 256, 1024), "the configuration's rule: the complement on")
	require.Equal(t, 48, Subspace(adam).Complement(0).rankOf(256, 256, 1024), "without it, the old share")
	require.Equal(t, 48, Subspace(sgd).rankOf(256, 256, 1024), "SGD takes no complement by default")
}

// TestAutoRankLiftCap: where the lift of the rank and its complement directions alone would be
// more than AutoRankLiftShare of ∂W (few rows per step), the automatic rank leaves the matrix
// out, even where the whole work is within AutoRankWorkShare: the quality suite's wide MLP at
// 128 rows (a work share of 0.65) cost 1.05× stock's eval loss for 0.90 of its step.
func TestAutoRankLiftCap(t *testing.T) {
	within := func(m, n, rows, r, s int) bool {
		return float64(projectorWork(m, n, rows, r, s)) <= AutoRankWorkShare*float64(rows)*float64(m)*float64(n)
	}
	require.True(t, within(512, 512, 128, 16, 32), "the work alone would pass")
	require.Zero(t, AutoRank(512, 512, 128), "48 directions lifted at 128 rows: 0.375 of ∂W")
	require.Equal(t, 16, AutoRank(512, 512, 192), "at 192 rows the lift is a quarter of ∂W")
	require.Equal(t, 16, AutoRank(512, 512, 2048), "the wide MLP at batch 2,048")
	require.Equal(t, 48, PlainAutoRank(256, 256, 1024), "the transformer without the complement: 48 of 1,024 rows")

	// Said in the plan, by a GoMLX model at batch 128 whose 512×512 layer the cap leaves out.
	modelFn := func(scope *model.Scope, x *Node) *Node {
		h := activation.Relu(layers.DenseWithBias(scope.In("in"), x, 512))
		h = activation.Relu(layers.DenseWithBias(scope.In("square"), h, 512))
		return layers.DenseWithBias(scope.In("head"), h, 1)
	}
	store := model.NewStore()
	opt := Subspace(optimizer.Adam().Done()).Done()
	trainer := train.NewTrainer(testBackend(t), store, modelFn, loss.MeanSquaredError, opt, nil, nil)
	x, y := toyProblem(128, 64)
	_, err := trainer.TrainStep(train.Batch{Inputs: []*tensors.Tensor{x}, Labels: []*tensors.Tensor{y}})
	require.NoError(t, err)
	for _, e := range opt.Plan() {
		if e.Variable == "/square/dense/weights" {
			require.Equal(t, RouteFull, e.Route, opt.PlanString())
			require.Contains(t, e.Why, "too few rows to pay: at 128 rows per step, lifting the automatic rank's 48 directions (16 + 32 random) would cost more than 0.25 of ∂W by itself")
		}
	}
}

// TestAutoRankCostCap: given the product's rows, a matrix keeps its automatic rank only where
// the projector's work (the complement's included) stays within AutoRankWorkShare of the ∂W it
// replaces; the rank is never lowered to fit (lower ranks cost quality), so a matrix where it
// does not pay is left out (0).
func TestAutoRankCostCap(t *testing.T) {
	within := func(m, n, rows, r, s int) bool {
		return float64(projectorWork(m, n, rows, r, s)) <= AutoRankWorkShare*float64(rows)*float64(m)*float64(n)
	}
	require.Equal(t, 16, AutoRank(256, 256, 1024), "the transformer example's attention projections")
	require.Equal(t, 16, AutoRank(256, 1024, 1024), "and its MLP projections")
	require.Equal(t, 48, PlainAutoRank(256, 256, 1024), "without the complement: 48 (0.66 of their ∂W)")
	for _, tc := range []struct{ m, n, rows int }{{256, 256, 1024}, {512, 512, 2048}, {768, 3072, 2048}, {1024, 1024, 1024}} {
		r := AutoRank(tc.m, tc.n, tc.rows)
		require.Equal(t, AutoRank(tc.m, tc.n, 0), r, "%v: the share, not lowered", tc)
		require.True(t, within(tc.m, tc.n, tc.rows, r, ComplementOf(min(tc.m, tc.n), r)), "%v", tc)
		require.Equal(t, ProjectorWork(tc.m, tc.n, tc.rows, r), projectorWork(tc.m, tc.n, tc.rows, r, ComplementOf(min(tc.m, tc.n), r)))
	}
	for _, tc := range []struct {
		m, n, rows int
		why        string
	}{
		{1024, 1024, 32, "a wide matrix at batch 32: the lift of 48 directions alone outweighs ∂W"},
		{64, 256, 512, "a 64-side matrix: 48 directions' coefficient is 3/4 of ∂W"},
		{256, 256, 64, "a 256-side matrix at 64 rows"},
		{16, 16, 1, "no share below the side"},
	} {
		require.Zero(t, AutoRank(tc.m, tc.n, tc.rows), tc.why)
		if r := AutoRank(tc.m, tc.n, 0); r > 0 {
			require.False(t, within(tc.m, tc.n, tc.rows, r, ComplementOf(min(tc.m, tc.n), r)), tc.why)
		}
	}
	require.Zero(t, PlainAutoRank(1024, 1024, 256), "without the complement, rank 192: its orthonormalisation alone (r²·side) outweighs ∂W")
}

// TestAutomaticRankInThePlan: without Rank, each matrix takes AutoRank of its own sides and
// product rows; a matrix the automatic rank leaves out says why, and the plan's header says the
// rank is automatic. A model where it leaves out every matrix trains as stock, with the guard.
func TestAutomaticRankInThePlan(t *testing.T) {
	opt := Subspace(optimizer.Adam().Done()).Done()
	trainDeepMLPOnce(t, opt, 2048)
	// At 2048 rows per step the square matrix keeps its rank (16 and 32 complement directions);
	// the [64, 512] matrix is left out: 16 + 32 directions' coefficient alone is most of its ∂W.
	require.Equal(t, map[string]int{"/square/dense/weights": 16}, plannedRanks(opt), opt.PlanString())
	plan := opt.PlanString()
	require.Contains(t, plan, "automatic rank")
	require.Contains(t, plan, "rank 16 + 32 random")
	require.Contains(t, plan, "at 2048 rows per step, the automatic rank (16) would cost the projector more than 0.7 of ∂W: left out")
	require.Contains(t, plan, "its smaller side (8) is ≤ 16")
	require.True(t, strings.Contains(plan, "/head/dense/weights"), plan)
	// The head is small enough for the size rule too, but its role is what to tell the user.
	for _, e := range opt.Plan() {
		if e.Variable == "/head/dense/weights" {
			require.Contains(t, e.Why, "the output head", plan)
		}
	}
}

// TestAutomaticRankStartsWithinRankBounds: with rank bounds, the automatic rank starts within
// them.
func TestAutomaticRankStartsWithinRankBounds(t *testing.T) {
	bounded := Subspace(optimizer.Adam().Done()).RankBounds(16, 32).Done()
	trainDeepMLPOnce(t, bounded, 2048)
	require.Equal(t, map[string]int{"/wide/dense/weights": 16, "/square/dense/weights": 16}, plannedRanks(bounded), bounded.PlanString())
}

// TestAutomaticRankAtASmallBatch: at batch 8 nothing pays for 32 directions: the model trains as
// with Adam alone (the guard still on), and the plan and the Report say so; its step is the
// base optimizer's alone, the same ops as Adam's (the guard's passes over every weight and
// moment took half a step of a wide MLP for a wrapper projecting nothing).
func TestAutomaticRankAtASmallBatch(t *testing.T) {
	small := Subspace(optimizer.Adam().Done()).Done()
	store := model.NewStore()
	trainer := train.NewTrainer(testBackend(t), store, deepMLP, loss.MeanSquaredError, small, nil, nil)
	x, y := toyProblem(8, 64)
	var losses []float64
	for range 20 {
		metrics, err := trainer.TrainStep(train.Batch{Inputs: []*tensors.Tensor{x}, Labels: []*tensors.Tensor{y}})
		require.NoError(t, err)
		losses = append(losses, float64(metrics[0].Value().(float32)))
	}
	require.Less(t, losses[len(losses)-1], losses[0], "it trains")
	require.Empty(t, plannedRanks(small), small.PlanString())
	require.Contains(t, small.PlanString(), "no variable projected: the model trains with its base optimizer alone")
	report, err := small.Report(store)
	require.NoError(t, err)
	require.Contains(t, report.String(), "no variable projected")
	stock := Subspace(optimizer.Adam().Done()).Enabled(false).Done()
	trainDeepMLPOnce(t, stock, 8)
	fs, err := stock.StepFLOPs()
	require.NoError(t, err)
	fp, err := small.StepFLOPs()
	require.NoError(t, err)
	require.Equal(t, fs.StepOps(), fp.StepOps())
}

// trainDeepMLPOnce takes one step of deepMLP on the toy problem at the given rows, with opt.
func trainDeepMLPOnce(t *testing.T, opt optimizer.Interface, rows int) {
	t.Helper()
	trainer := train.NewTrainer(testBackend(t), model.NewStore(), deepMLP, loss.MeanSquaredError, opt, nil, nil)
	x, y := toyProblem(rows, 64)
	_, err := trainer.TrainStep(train.Batch{Inputs: []*tensors.Tensor{x}, Labels: []*tensors.Tensor{y}})
	require.NoError(t, err)
}

// plannedRanks is the rank of each projected variable in opt's plan.
func plannedRanks(opt *Optimizer) map[string]int {
	ranks := map[string]int{}
	for _, e := range opt.Plan() {
		if e.Route != RouteFull {
			ranks[e.Variable] = e.Rank
		}
	}
	return ranks
}

// deepMLP has matrices of several sizes: [64, 512], [512, 512], [512, 8] and a head.
func deepMLP(scope *model.Scope, x *Node) *Node {
	h := activation.Apply(activation.TypeTanh, layers.DenseWithBias(scope.In("wide"), x, 512))
	h = activation.Apply(activation.TypeTanh, layers.DenseWithBias(scope.In("square"), h, 512))
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
	require.NoError(t, step(store, Subspace(optimizer.Adam().Done()).Rank(8).Done(), 2048))
	err := step(store, Subspace(optimizer.Adam().Done()).Done(), 2048)
	require.ErrorContains(t, err, "/square/dense/weights's basis at rank 8 (from a checkpoint), but the automatic rank is 16")
	require.ErrorContains(t, err, "resume with Rank(8)")

	// At a batch where the automatic rank leaves every matrix out, the plan says that the
	// stored bases are unused, and how to keep projecting.
	store = model.NewStore()
	require.NoError(t, step(store, Subspace(optimizer.Adam().Done()).Rank(8).Done(), 2048))
	auto := Subspace(optimizer.Adam().Done()).Done()
	require.NoError(t, step(store, auto, 8))
	require.Contains(t, auto.PlanString(), "/square/dense/weights")
	require.Contains(t, auto.PlanString(), "the store holds its basis at rank 8 (from a checkpoint), unused now: resume with Rank(8) to go on projecting it")
}
