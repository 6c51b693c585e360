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
	"github.com/gomlx/gomlx/ui/commandline"
	"github.com/gradsub/gradsub/projector"
	"github.com/stretchr/testify/require"
)

// TestConfigurationErrors: an impossible option is an error from Validate that names it, and the
// same error from the first training step, not a crash.
func TestConfigurationErrors(t *testing.T) {
	adam := optimizer.Adam().Done()
	for _, tc := range []struct {
		cfg  *Config
		want string
	}{
		{Subspace(adam).Rank(-1), "Rank(-1) is impossible"},
		{Subspace(adam).Mode(Temporal).Rank(8).WarmUp(4), "WarmUp(4) is shorter than Rank(8)"},
		{Subspace(adam).VarianceThreshold(0.9), "VarianceThreshold applies to the temporal subspace"},
		{Subspace(adam).WarmUp(0), "WarmUp(0) must be ≥ 1"},
		{Subspace(adam).Mode(Temporal).VarianceThreshold(2), "VarianceThreshold(2) is outside"},
		{Subspace(adam).ResidualThreshold(0), "ResidualThreshold(0) is outside"},
		{Subspace(adam).RankBounds(9, 8), "Policy.MinRank 9 is above MaxRank 8"},
		{Subspace(adam).Mode(Temporal).RankBounds(2, 8), "adaptive rank (RankBounds) applies to the matrix subspace"},
		{Subspace(adam).Matching("("), "invalid pattern"},
		{Subspace(nil), "base optimizer is nil"},
		// Non-finite and out-of-range numbers (issue 12): a NaN threshold used to switch its rule
		// off silently, WeightDecay(+Inf) made a layer's weights non-finite with a finite loss.
		{Subspace(adam).Mode(7), "Mode(7) is neither hooks.Matrix nor hooks.Temporal"},
		{Subspace(adam).Mode(-1), "Mode(-1) is neither"},
		{Subspace(adam).Mode(Temporal).VarianceThreshold(math.NaN()), "VarianceThreshold(NaN) must be a finite number"},
		{Subspace(adam).WeightDecay(math.Inf(1)), "WeightDecay(+Inf) is outside [0, 1]"},
		{Subspace(adam).WeightDecay(1e30), "WeightDecay(1e+30) is outside [0, 1]"},
		{Subspace(adam).WeightDecay(math.NaN()), "WeightDecay(NaN) is outside"},
		{Subspace(adam).ResidualThreshold(math.NaN()), "Policy.ResidualThreshold is NaN: it must be a finite number"},
		{Subspace(adam).TrackingRate(math.NaN(), 4), "Policy.TrackingRate is NaN"},
		{Subspace(adam).Scale(-1), "Scale(-1) must be a finite number ≥ 0"},
		{Subspace(adam).Scale(math.NaN()), "Scale(NaN) must be"},
		{Subspace(adam).Scale(math.Inf(1)), "Scale(+Inf) must be"},
		{Subspace(adam).Mode(Temporal).Scale(0), "automatic Scale(0) applies to the matrix subspace"},
	} {
		require.ErrorContains(t, tc.cfg.Validate(), tc.want)
		// The same error surfaces from the first training step, not as a crash.
		if tc.cfg.base != nil {
			r := newRun(t, tc.cfg.Done())
			_, err := r.trainer.TrainStep(r.batch())
			require.ErrorContains(t, err, tc.want)
		}
	}
}

// TestSelectionErrors: a selection that matches nothing names the trainable variables; a
// selected variable too small for the rank, or not a matrix, says so; left to the default
// selection, such a variable is left out with its reason in the plan.
func TestSelectionErrors(t *testing.T) {
	adam := optimizer.Adam().Done()
	r := newRun(t, Subspace(adam).Variables("/no/such/var").Done())
	_, err := r.trainer.TrainStep(r.batch())
	require.ErrorContains(t, err, "matches none of the 4 trainable variables")
	require.ErrorContains(t, err, firstLayer)
	// A selected variable too small for the rank, or not a matrix.
	r = newRun(t, Subspace(adam).Mode(Temporal).Rank(4).Variables("/output/dense/biases").Done())
	_, err = r.trainer.TrainStep(r.batch())
	require.ErrorContains(t, err, "fewer than Rank(4)")
	r = newRun(t, Subspace(adam).Variables("/output/dense/biases").Done())
	_, err = r.trainer.TrainStep(r.batch())
	require.ErrorContains(t, err, "is not a matrix")
	// Explicitly selected, a [16, 1] matrix cannot take rank 4 on its smaller side.
	r = newRun(t, Subspace(adam).Rank(4).Variables("/output/dense/weights").Done())
	_, err = r.trainer.TrainStep(r.batch())
	require.ErrorContains(t, err, "rank 4 exceeds the right side")
	// By default it is left out, with the reason in the plan: its role, the output head, which
	// rules it out at any rank (it is also too narrow for rank 4).
	opt := Subspace(adam).Rank(4).Done()
	r = newRun(t, opt)
	r.step(t)
	plan := opt.Plan()
	require.Len(t, plan, 4)
	require.Equal(t, RouteDirect, plan[0].Route, opt.PlanString())
	require.Equal(t, RouteFull, plan[2].Route, opt.PlanString())
	require.Contains(t, plan[2].Why, "the output head")
	// A matrix of no such role that a rank-k basis would not shrink is left out for its size;
	// with nothing left to project, the error lists each variable's reason.
	r = newRun(t, Subspace(adam).Rank(16).Done())
	_, err = r.trainer.TrainStep(r.batch())
	require.ErrorContains(t, err, "/hidden/dense/weights [12 16]: too small to pay: its smaller side (12) is ≤ Rank(16), so a basis would not shrink it")
}

func TestStepFLOPsCountsTheGraphsProducts(t *testing.T) {
	// Batch 64, 12 → 16 → 1. Forward: 2·64·12·16 + 2·64·16·1. Backward: ∂W and ∂x of the output
	// layer, ∂W only of the first (nothing needs ∂x of the input).
	forward := int64(2*64*12*16 + 2*64*16*1)
	gradient := int64(2*64*16*1*2 + 2*64*12*16)

	stock := Subspace(optimizer.Adam().Done()).Enabled(false).Done()
	r := newRun(t, stock)
	r.step(t)
	f, err := stock.StepFLOPs()
	require.NoError(t, err)
	require.Equal(t, forward, f.Forward)
	require.Equal(t, gradient, f.Gradient)
	require.Zero(t, f.Optimizer)

	const k, n0 = 3, 6
	proj := Subspace(optimizer.Adam().Done()).Mode(Temporal).Rank(k).WarmUp(n0).Done()
	r = newRun(t, proj)
	r.step(t)
	f, err = proj.StepFLOPs()
	require.NoError(t, err)
	require.Equal(t, forward, f.Forward)
	// The temporal subspace keeps the full backward. Per step, per projected variable of P
	// elements: the residual (Vᵀg and V·c) and the coefficients Vᵀg on the gradient side, the
	// lift V·Δc on the optimizer side: products of 2·P·k each.
	// Learning's large products run on every step too (only the eigen-solve's loop is gated):
	// the Gram matrix of the N0 snapshots (2·N0²·P), the basis Gᵀ·U (2·P·N0·k) and its
	// Newton–Schulz re-orthonormalisation (its Gram and final product, 2·2·P·k², and three k×k
	// products per iteration after the first, 3·2·k³), and per variable the sort of
	// the N0 eigenpairs by a permutation product (2·N0³ + 2·N0²) and VᵀV from the Gram matrix
	// (Uᵀ·G·U: 2·k·N0² + 2·k²·N0), which scales V before Newton–Schulz. The check that the
	// stored basis is orthonormal is a VᵀV (2·P·k²).
	p1, p2 := int64(12*16), int64(16*1)
	learning := f.Gradient - (gradient + 3*2*k*(p1+p2))
	ns := int64(len(projector.NewtonSchulzSchedule(0.8)))
	tile := int64((k + projector.ProductTile - 1) / projector.ProductTile * projector.ProductTile) // the basis product's rows, padded
	require.Equal(t, (2*n0*n0+2*n0*tile+2*2*k*k+2*k*k)*(p1+p2)+2*(2*n0*n0*n0+2*n0*n0+2*tile*n0*n0+2*k*k*n0+3*(ns-1)*2*k*k*k), learning, "the Gram, basis, Newton–Schulz and sort products")
	require.Equal(t, 2*k*(p1+p2), f.Optimizer)
	require.Positive(t, f.PerLearn)
	_, err = Subspace(optimizer.Adam().Done()).Done().StepFLOPs()
	require.ErrorContains(t, err, "no step graph built yet")
}

func TestLossPlateauTriggersRefresh(t *testing.T) {
	// Residual trigger off; a plateau of 2 checks (every 3 steps) triggers a refresh. Plain SGD
	// with a tiny learning rate barely moves the loss, so the smoothed loss stops falling.
	opt := Subspace(optimizer.StochasticGradientDescent().WithDecay(false).WithLearningRate(1e-6).Done()).Mode(Temporal).
		Rank(2).WarmUp(4).CheckEvery(3).ResidualThreshold(1).LossPatience(2).Done()
	r := newRun(t, opt)
	mon := opt.NewMonitor(r.store)
	for range 40 {
		r.step(t)
		require.NoError(t, mon.Observe())
	}
	report, err := opt.Report(r.store)
	require.NoError(t, err)
	require.Zero(t, report.RefreshesResidual, "the residual trigger is off")
	require.Positive(t, report.RefreshesLoss)
	require.Equal(t, report.Refreshes, report.RefreshesLoss)
	for _, e := range mon.Events[1:] {
		require.Equal(t, CauseLoss, e.Cause)
		require.Contains(t, e.String(), "smoothed loss stopped falling")
	}
	// Patience 2 at a check every 3 steps: at most one refresh per 6 steps after warm-up.
	require.LessOrEqual(t, report.RefreshesLoss, int64((40-4)/6))
}

// TestSameSeedSameLosses: two runs with the same seed agree exactly, losses and projector state,
// through warm-up and refreshes. It guards the gated SVD against the Go backend's parallel
// scheduler (compute v0.1.14 could recycle a buffer a closure returned; see projector.gate).
func TestSameSeedSameLosses(t *testing.T) {
	for _, mode := range []Mode{Temporal, Matrix} {
		t.Run(mode.String(), func(t *testing.T) { testSameSeedSameLosses(t, mode) })
	}
}

func testSameSeedSameLosses(t *testing.T, mode Mode) {
	trace := func() []string {
		opt := Subspace(optimizer.Adam().LearningRate(0.01).Done()).Mode(mode).
			Rank(4).WarmUp(8).CheckEvery(5).ResidualThreshold(0.3).Done()
		r := newRun(t, opt)
		var lines []string
		for range 120 {
			loss := r.step(t)
			rep, err := opt.Report(r.store)
			require.NoError(t, err)
			lines = append(lines, fmt.Sprintf("step %d loss %v checks %d svds %d refreshes %d residual %v",
				rep.Steps, loss, rep.Checks, rep.SVDs, rep.Refreshes, rep.LastCheckResidual))
		}
		return lines
	}
	first := trace()
	for range 3 {
		require.Equal(t, first, trace())
	}
}

// plainOptimizer implements only optimizer.Interface, not UpdateGraphWithGradients.
type plainOptimizer struct{}

func (plainOptimizer) UpdateGraph(*model.Scope, *Graph, *Node) {}
func (plainOptimizer) Clear(*model.Scope) error                { return nil }

func TestBaseOptimizerWithoutGradientsEntryPoint(t *testing.T) {
	require.ErrorContains(t, Subspace(plainOptimizer{}).Validate(), "does not implement UpdateGraphWithGradients")
	// With projection off it is only delegated to, so it is fine.
	require.NoError(t, Subspace(plainOptimizer{}).Enabled(false).Validate())
}

func TestIntegerVariableCannotBeProjected(t *testing.T) {
	store := model.NewStore()
	modelFn := func(scope *model.Scope, x *Node) *Node {
		offset := scope.In("offset").VariableWithValue("count", []int32{1, 2}) // trainable, integer
		return Add(mlp(scope, x), ReduceAllSum(ConvertDType(offset.NodeValue(x.Graph()), dtypes.Float32)))
	}
	opt := Subspace(optimizer.Adam().Done()).Variables("/offset/count").Done()
	trainer := train.NewTrainer(testBackend(t), store, modelFn, loss.MeanSquaredError, opt, nil, nil)
	r := &run{store: store, trainer: trainer}
	_, err := r.trainer.TrainStep(r.batch())
	require.ErrorContains(t, err, "has dtype Int32: only float variables can be projected")
}

// Temporal mode on a variable far larger than its few directions can serve trained at chance
// without a word; the plan now recommends the matrix subspace for it, and only for it.
func TestPlanRecommendsMatrixModeForLargeTemporalVariables(t *testing.T) {
	for _, tc := range []struct {
		hidden int
		large  bool
	}{{16, false}, {48, true}} { // [12, 16]: 96 elements per direction at rank 2; [12, 48]: 288
		opt := Subspace(optimizer.Adam().Done()).Mode(Temporal).Rank(2).WarmUp(4).Variables(firstLayer).Done()
		store := model.NewStore()
		trainer := train.NewTrainer(testBackend(t), store, func(scope *model.Scope, x *Node) *Node {
			h := activation.Apply(activation.TypeTanh, layers.DenseWithBias(scope.In("hidden"), x, tc.hidden))
			return layers.DenseWithBias(scope.In("output"), h, 1)
		}, loss.MeanSquaredError, opt, nil, nil)
		r := &run{store: store, trainer: trainer}
		r.step(t)
		if tc.large {
			require.Contains(t, opt.Plan()[0].Why, "use Mode(hooks.Matrix)", opt.PlanString())
		} else {
			require.NotContains(t, opt.Plan()[0].Why, "Mode(hooks.Matrix)", opt.PlanString())
		}
	}
}

// TestFromScope: every option read from the scope's params (as `-set` writes them), and a
// param of the wrong type or an unknown mode is an error naming the param, not a panic in GoMLX.
func TestFromScope(t *testing.T) {
	store := model.NewStore()
	scope := store.RootScope()
	scope.SetParam(ParamRank, 6)
	scope.SetParam(ParamTrackingRate, 0.5)
	scope.SetParam(ParamExplodeFactor, 0.0)
	scope.SetParam(ParamMode, "temporal")
	cfg := Subspace(optimizer.Adam().Done()).FromScope(scope)
	require.NoError(t, cfg.Validate())
	require.Equal(t, 6, cfg.rank)
	require.Equal(t, Temporal, cfg.mode)
	require.Equal(t, 0.5, cfg.DriftPolicy().TrackingRate)
	require.Zero(t, cfg.DriftPolicy().ExplodeFactor)

	scope.SetParam(ParamRank, "six")
	require.ErrorContains(t, Subspace(optimizer.Adam().Done()).FromScope(scope).Validate(), `param "subspace_rank" has the wrong type (want int`)
	scope.SetParam(ParamRank, 6)
	scope.SetParam(ParamMode, "spectral")
	require.ErrorContains(t, Subspace(optimizer.Adam().Done()).FromScope(scope).Validate(), `subspace_mode: unknown subspace mode "spectral"`)

	_, err := Subspace(optimizer.Adam().Done()).Done().Report(nil)
	require.ErrorContains(t, err, "Report needs the store")
	require.ErrorContains(t, Subspace(optimizer.Adam().Done()).Done().NewMonitor(nil).Observe(), "Report needs the store")
}

// TestSettingsFromTheCommandLine: a GoMLX program registers its params' defaults, parses -set
// with commandline.ParseSettings, and builds its optimizer from the scope. ParseSettings failed
// for the projector's params ("not known in the root scope") unless the user registered them by
// hand; Side, the selection, Enabled and most Policy fields had no param; and params set after
// FromScope were ignored. A param of the wrong type is an error of the first step, not a panic.
func TestSettingsFromTheCommandLine(t *testing.T) {
	store := model.NewStore()
	store.SetParams(DefaultParams())
	opt := Subspace(optimizer.Adam().Done()).FromScope(store.RootScope()).Done() // before -set is parsed
	_, err := commandline.ParseSettings(store, "subspace_rank=2;subspace_side=right;subspace_matching=^/hidden/dense/weights$;subspace_tracking_fraction=0.5;subspace_drift_margin=0.2;subspace_scale=0")
	require.NoError(t, err)
	r := &run{store: store, trainer: train.NewTrainer(testBackend(t), store, mlp, loss.MeanSquaredError, opt, nil, nil)}
	r.step(t)
	plan := opt.Plan()
	require.Equal(t, projector.Right, plan[0].Side, opt.PlanString())
	require.Equal(t, 2, plan[0].Rank, opt.PlanString())
	require.Contains(t, opt.PlanString(), "rank 2 + 4 random, step ×2.83", "subspace_scale=0: √(16/2) on the 16-row right side")
	require.Contains(t, opt.PlanString(), `not selected (variables matching "^/hidden/dense/weights$")`)
	require.Equal(t, 0.5, opt.Config().DriftPolicy().TrackingFraction)
	require.Equal(t, 0.2, opt.Config().DriftPolicy().DriftMargin)
	require.NoError(t, opt.Config().Validate(), "Config() can be validated as returned")

	for key := range DefaultParams() { // every param can be set from the command line
		_, err := commandline.ParseSettings(store, key+"="+fmt.Sprint(DefaultParams()[key]))
		require.NoError(t, err, key)
	}

	bad := model.NewStore()
	bad.SetParams(DefaultParams())
	badOpt := Subspace(optimizer.Adam().Done()).FromScope(bad.RootScope()).Done()
	bad.RootScope().SetParam(ParamRank, "six") // set after FromScope: read at the first step
	_, err = train.NewTrainer(testBackend(t), bad, mlp, loss.MeanSquaredError, badOpt, nil, nil).TrainStep(r.batch())
	require.ErrorContains(t, err, `param "subspace_rank" has the wrong type`)
}

// TestCountFLOPsCountsScalarOps: of the live ops, those with a single-value output are counted
// apart (their cost is dispatch); parameters, constants and dead nodes are not ops.
func TestCountFLOPsCountsScalarOps(t *testing.T) {
	g := NewGraph(testBackend(t), "scalar ops")
	x := Parameter(g, "x", shapes.Make(dtypes.Float32, 3))
	sum := ReduceAllSum(x)       // scalar
	shifted := AddScalar(sum, 1) // scalar (its constant is no op)
	out := Mul(x, shifted)       // [3], with a broadcast of the scalar
	_ = Neg(sum)                 // dead: not an op
	f := CountFLOPs(g, GraphMarks{Forward: len(g.Nodes()), Gradient: len(g.Nodes())}, []*Node{out})
	require.Equal(t, 2, f.Ops.Scalar, "ReduceSum and Add")
	require.GreaterOrEqual(t, f.StepOps(), 3, "and the Mul")
	require.Less(t, f.StepOps(), 6, "no parameter, constant or dead node")
}
