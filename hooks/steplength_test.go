package hooks

import (
	"math"
	"testing"

	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/stretchr/testify/require"
)

// TestStepLengthScalesTheTrackedStep: the step-length rule multiplies the tracked directions' step
// by the factor the Report gives, and nothing else changes. Two runs from the same weights, one
// with the rule and one without (Complement(0), so that the whole update is the tracked one):
//   - the first step is the same (no earlier gradient: the factor is 1);
//   - the second is the rule-less run's second step times the reported factor, exactly, and the
//     factor is exp(rate·cos) of two successive, agreeing gradients: above 1.
func TestStepLengthScalesTheTrackedStep(t *testing.T) {
	const rank = 3
	newCfg := func(rate float64) *Config {
		return Subspace(optimizer.Adam().LearningRate(1e-3).Done()).Rank(rank).Complement(0).ScaleAdaptation(rate)
	}
	rule, still := newCfg(DefaultScaleAdaptation).Done(), newCfg(0).Done()
	runs := []*run{newRun(t, rule), newRun(t, still)}
	deltas := make([][2][]float64, 2) // [run][step]
	for i, r := range runs {
		r.float64 = true
		_, err := r.trainer.EvalStep(r.batch())
		require.NoError(t, err)
		for s := range 2 {
			before := r.value(t, firstLayer)
			r.step(t)
			after := r.value(t, firstLayer)
			for j := range before {
				after[j] -= before[j]
			}
			deltas[i][s] = after
		}
	}
	require.InDeltaSlice(t, deltas[1][0], deltas[0][0], 1e-12, "the first step has no earlier gradient: the factor is 1")
	report, err := rule.Report(runs[0].store)
	require.NoError(t, err)
	factor := report.Variables[0].StepScale
	require.Greater(t, factor, 1.0, "successive gradients of a slow descent agree: the factor grows")
	require.LessOrEqual(t, factor, math.Exp(DefaultScaleAdaptation)+1e-9, "one step moves its log by at most the rate")
	for j, d := range deltas[1][1] {
		require.InDelta(t, factor*d, deltas[0][1][j], 1e-6*math.Abs(d)+1e-15, "the tracked step times the factor (kept in float32)")
	}
	stillReport, err := still.Report(runs[1].store)
	require.NoError(t, err)
	require.Equal(t, 1.0, stillReport.Variables[0].StepScale, "ScaleAdaptation(0) keeps the published method's scale")
}

// TestStepLengthStaysWithinItsBounds: over a long, slow descent the factor reaches √(side/rank)
// and stops there; after SGD (whose step follows the gradient, not normalised) the rule is off.
func TestStepLengthStaysWithinItsBounds(t *testing.T) {
	const rank, side = 3, 12 // the toy MLP's first layer is 12×16: its basis is on the 12-row side
	adam := Subspace(optimizer.Adam().LearningRate(1e-4).Done()).Rank(rank).Done()
	r := newRun(t, adam)
	for range 40 {
		r.step(t)
	}
	report, err := adam.Report(r.store)
	require.NoError(t, err)
	require.InDelta(t, math.Sqrt(side/rank), report.Variables[0].StepScale, 1e-5, "the factor stops at √(side/rank)")

	sgd := Subspace(optimizer.StochasticGradientDescent().WithLearningRate(1e-3).Done()).Rank(rank).Done()
	r = newRun(t, sgd)
	for range 10 {
		r.step(t)
	}
	report, err = sgd.Report(r.store)
	require.NoError(t, err)
	require.Equal(t, 1.0, report.Variables[0].StepScale, "after SGD the projected step is not shortened, and the rule is off")
}

// TestScaleAdaptationIsValidated: a rate that is not a finite number in [0, 10] is an error naming
// the option; its param reaches the configuration.
func TestScaleAdaptationIsValidated(t *testing.T) {
	adam := optimizer.Adam().Done()
	for _, bad := range []float64{-1, math.NaN(), math.Inf(1), 11} {
		require.ErrorContains(t, Subspace(adam).ScaleAdaptation(bad).Validate(), "ScaleAdaptation(", "rate %g", bad)
	}
	require.NoError(t, Subspace(adam).ScaleAdaptation(0).Validate())
	require.Equal(t, DefaultScaleAdaptation, DefaultParams()[ParamScaleAdaptation])
}
