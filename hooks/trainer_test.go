package hooks

import (
	"fmt"
	"math"
	"testing"

	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/train"
	"github.com/gomlx/gomlx/ml/train/loss"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/stretchr/testify/require"
)

// TestRankAboveTheGradientsRank: rank 10 on a 12×16 weight whose gradient, from a batch of 3, has
// rank at most 3. The gated learning returned a basis with ‖QᵀQ − I‖ = 1 and an explained
// variance above 1 in such a case; a tracked basis stays orthonormal (the directions the gradient
// does not span keep their start) and its statistics stay in [0, 1].
func TestRankAboveTheGradientsRank(t *testing.T) {
	opt := Subspace(optimizer.Adam().LearningRate(0.01).Done()).Rank(10).WarmUp(3).CheckEvery(2).Variables(firstLayer).Done()
	store := model.NewStore()
	store.SetParam(model.ParamInitialSeed, int64(7))
	trainer := train.NewTrainer(testBackend(t), store, mlp, loss.MeanSquaredError, opt, nil, nil)
	for range 12 {
		x, y := toyProblem(3, 12)
		_, err := trainer.TrainStep(train.Batch{Inputs: []*tensors.Tensor{x}, Labels: []*tensors.Tensor{y}})
		require.NoError(t, err)
	}
	require.Less(t, basisOrthonormalityError(t, store, "/subspace/hidden/dense/weights_basis"), 1e-5)
	report, err := opt.Report(store)
	require.NoError(t, err)
	v := report.Variables[0]
	require.True(t, v.ExplainedVariance >= 0 && v.ExplainedVariance <= 1, "explained %g", v.ExplainedVariance)
	require.True(t, v.Residual >= 0 && v.Residual <= 1, "residual %g", v.Residual)
	// And the plan says it: a step's gradient spans at most 3 of the 10 directions.
	require.Contains(t, opt.PlanString(), "rank 10 above the 3 rows of a step: one step's gradient spans at most 3 of its directions")
}

// TestOneOptimizerPerTrainer: an optimizer shared by two trainers leaked plans and rank decisions
// from one model into the other; it is an error that says to create one per trainer.
func TestOneOptimizerPerTrainer(t *testing.T) {
	opt := Subspace(optimizer.Adam().Done()).Rank(3).Done()
	first := newRun(t, opt)
	first.step(t)
	second := newRun(t, opt)
	_, err := second.trainer.TrainStep(second.batch())
	require.ErrorContains(t, err, "this optimizer already trains another store's variables: create one optimizer")
	first.step(t) // the first trainer goes on
}

// TestGradientAccumulation: GoMLX's Trainer.AccumulateGradients hands the optimizer full,
// accumulated gradients (train.OptimizeWithGradients); it used to fail with "does not implement
// OptimizeWithGradients". Matrix-projected variables then project the full gradient (the
// post-hoc path, said in the plan), and training proceeds in both modes.
func TestGradientAccumulation(t *testing.T) {
	for _, mode := range []Mode{Matrix, Temporal} {
		t.Run(mode.String(), func(t *testing.T) {
			opt := Subspace(optimizer.Adam().LearningRate(0.01).Done()).Mode(mode).Rank(3).WarmUp(4).CheckEvery(3).Done()
			r := newRun(t, opt)
			require.NoError(t, r.trainer.AccumulateGradients(2))
			first := r.step(t)
			var last float64
			for range 59 {
				last = r.step(t)
			}
			require.Less(t, last, first/2, "trains with accumulated gradients")
			report, err := opt.Report(r.store)
			require.NoError(t, err)
			require.Equal(t, int64(30), report.Steps, "one optimizer step per 2 train steps")
			require.Zero(t, report.SkippedSteps)
			if mode == Matrix {
				require.Equal(t, RoutePostHoc, opt.Plan()[0].Route, opt.PlanString())
				require.Contains(t, opt.Plan()[0].Why, "AccumulateGradients")
				require.Less(t, basisOrthonormalityError(t, r.store, "/subspace/hidden/dense/weights_basis"), 1e-5)
			}
			requireFinite(t, r.snapshot(t))
		})
	}
}

// TestClipStepByValueClipsTheWeightStep: GoMLX's clip_step_by_value bounds each value of a
// step. The base optimizer clips the coefficient step, but a lifted step sums Rank coefficients:
// a weight moved by 1.74e-4 under a clip of 1e-4. Now the weight's own step is clipped, in both
// modes, as stock Adam's is.
func TestClipStepByValueClipsTheWeightStep(t *testing.T) {
	const clip = 1e-4
	for _, mode := range []Mode{Matrix, Temporal} {
		t.Run(mode.String(), func(t *testing.T) {
			opt := Subspace(optimizer.Adam().LearningRate(0.05).Done()).Mode(mode).Rank(3).WarmUp(3).Done()
			r := newRun(t, opt)
			r.store.SetParam(optimizer.ParamClipStepByValue, clip)
			r.step(t) // creates the variables
			var worst float64
			for range 8 {
				before := r.value(t, firstLayer)
				r.step(t)
				after := r.value(t, firstLayer)
				for i := range before {
					worst = math.Max(worst, math.Abs(after[i]-before[i]))
				}
			}
			require.LessOrEqual(t, worst, clip*(1+1e-3), "largest weight step")
			require.Greater(t, worst, clip/2, "the clip binds at this learning rate")
		})
	}
}

// TestProgressMetric: the Monitor's column for GoMLX's progress bar names the projector's state
// as of the last observation (log lines would tear the bar).
func TestProgressMetric(t *testing.T) {
	opt := Subspace(optimizer.Adam().LearningRate(0.01).Done()).Rank(3).WarmUp(2).CheckEvery(2).Done()
	r := newRun(t, opt)
	mon := opt.NewMonitor(r.store)
	mon.Logf = nil
	r.stepsObserved(t, mon, 6)
	name, value := mon.ProgressMetric()()
	require.Equal(t, "subspace", name)
	report, err := opt.Report(r.store)
	require.NoError(t, err)
	require.Contains(t, value, fmt.Sprintf("refreshes %d, residual %.2f", report.Refreshes, report.LastCheckResidual))
}
