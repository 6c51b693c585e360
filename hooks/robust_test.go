package hooks

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/train"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/stretchr/testify/require"
)

// snapshot copies every float variable of the store (weights, optimizer state, bases).
func (r *run) snapshot(t *testing.T) map[string][]float64 {
	t.Helper()
	out := map[string][]float64{}
	for v := range r.store.IterVariables() {
		value, err := v.Value()
		require.NoError(t, err)
		switch v.DType() {
		case dtypes.Float32:
			for _, x := range tensors.MustCopyFlatData[float32](value) {
				out[v.Path()] = append(out[v.Path()], float64(x))
			}
		case dtypes.Float64:
			out[v.Path()] = tensors.MustCopyFlatData[float64](value)
		}
	}
	return out
}

func requireFinite(t *testing.T, values map[string][]float64) {
	t.Helper()
	for p, xs := range values {
		for _, x := range xs {
			require.False(t, math.IsNaN(x) || math.IsInf(x, 0), "%s holds a non-finite value", p)
		}
	}
}

// badBatch returns the toy batch with one input poisoned (or the labels scaled).
func badBatch(kind string) train.Batch {
	x, y := toyProblem(64, 12)
	xs, ys := tensors.MustCopyFlatData[float32](x), tensors.MustCopyFlatData[float32](y)
	switch kind {
	case "nan":
		xs[5] = float32(math.NaN())
	case "inf":
		xs[7] = float32(math.Inf(1))
	case "exploding":
		for i := range ys {
			ys[i] *= 1e4
		}
	case "zero input":
		clear(xs)
	}
	return train.Batch{Inputs: []*tensors.Tensor{tensors.FromFlatDataAndDimensions(xs, 64, 12)},
		Labels: []*tensors.Tensor{tensors.FromFlatDataAndDimensions(ys, 64, 1)}}
}

func TestBadStepsAreSkippedAndNothingIsLost(t *testing.T) {
	for _, mode := range []Mode{Matrix, Temporal} {
		for _, kind := range []string{"nan", "inf", "exploding"} {
			t.Run(mode.String()+"/"+kind, func(t *testing.T) {
				opt := Subspace(optimizer.Adam().LearningRate(0.01).Done()).Mode(mode).
					Rank(3).WarmUp(4).CheckEvery(3).Done()
				r := newRun(t, opt)
				mon := opt.NewMonitor(r.store)
				var logged []string
				mon.Logf = func(format string, args ...any) { logged = append(logged, format) }
				r.stepsObserved(t, mon, 8)
				before := r.snapshot(t)
				_, err := r.trainer.TrainStep(badBatch(kind))
				require.NoError(t, err)
				require.NoError(t, mon.Observe())
				after := r.snapshot(t)
				for p, old := range before {
					if strings.HasPrefix(p, "/metrics/") { // the trainer's metrics see every step
						continue
					}
					require.Equal(t, old, after[p], "%s changed on a skipped step", p)
				}
				report, err := opt.Report(r.store)
				require.NoError(t, err)
				require.Equal(t, int64(1), report.SkippedSteps)
				require.Contains(t, report.String(), "1 skipped")
				require.Contains(t, logged, "subspace: %d step(s) skipped by step %d: non-finite or exploding loss or gradient; weights, optimizer state and bases kept")
				// Training goes on from where it was, and every value stays finite.
				first, last := r.stepsObserved(t, mon, 30)
				require.Less(t, last, first)
				state := r.snapshot(t)
				for p := range state {
					// GoMLX's moving-average loss metric averages the bad step's loss too (seen
					// NaN on xla:cuda): the trainer's metrics are outside the projector's guard.
					if strings.HasPrefix(p, "/metrics/") {
						delete(state, p)
					}
				}
				requireFinite(t, state)
			})
		}
	}
}

func TestZeroGradientKeepsTheBasis(t *testing.T) {
	// A batch of zero inputs gives the first layer a zero weight gradient ((x·Q)ᵀ·∂y = 0) during
	// warm-up, when bases move fastest: the step is taken (its other gradients are fine), and
	// the basis stays where it was (to rounding: it is re-orthonormalised).
	opt := Subspace(optimizer.Adam().LearningRate(0.01).Done()).Rank(3).WarmUp(5).Done()
	r := newRun(t, opt)
	mon := opt.NewMonitor(r.store)
	r.stepsObserved(t, mon, 2)
	basis := r.value(t, "/subspace/hidden/dense/weights_basis")
	_, err := r.trainer.TrainStep(badBatch("zero input"))
	require.NoError(t, err)
	require.NoError(t, mon.Observe())
	require.InDeltaSlice(t, basis, r.value(t, "/subspace/hidden/dense/weights_basis"), 1e-6)
	report, err := opt.Report(r.store)
	require.NoError(t, err)
	require.Zero(t, report.SkippedSteps)
	requireFinite(t, r.snapshot(t))
}

// A layer whose gradients are zero all through warm-up must not stay frozen: the old gated
// learning left it without a basis, and no rule replaced one that never became valid. A tracked
// basis starts orthonormal (a fixed random one), so the layer takes updates from its first
// non-zero gradient and its basis moves towards that gradient's subspace.
func TestLayerWithZeroGradientsInWarmUpTrainsLater(t *testing.T) {
	opt := Subspace(optimizer.Adam().LearningRate(0.01).Done()).Rank(3).WarmUp(5).CheckEvery(10).Done()
	r := newRun(t, opt)
	mon := opt.NewMonitor(r.store)
	for range 5 { // warm-up on zero inputs: the first layer's gradient is zero
		_, err := r.trainer.TrainStep(badBatch("zero input"))
		require.NoError(t, err)
		require.NoError(t, mon.Observe())
	}
	frozen := r.value(t, firstLayer)
	start, err := opt.Report(r.store)
	require.NoError(t, err)
	r.stepsObserved(t, mon, 20) // real data
	report, err := opt.Report(r.store)
	require.NoError(t, err)
	require.True(t, report.Variables[0].Valid)
	require.NotEqual(t, frozen, r.value(t, firstLayer), "the layer trains")
	require.Less(t, report.Variables[0].Residual, 0.9, "its basis found the gradients' subspace (residual %.3f at the start)", start.Variables[0].Residual)
	require.Less(t, basisOrthonormalityError(t, r.store, "/subspace/hidden/dense/weights_basis"), 1e-5)
}

// TestTemporalBasisNeverLearnedIsReplaced: in temporal mode the basis is fixed between refreshes,
// and the residual rule fired only when the residual grew after the basis's first check. A layer
// whose warm-up gradients were all zero had no basis (residual 1 from the first check on) and
// was never given one; now a missing (or damaged) basis is replaced at the next check.
func TestTemporalBasisNeverLearnedIsReplaced(t *testing.T) {
	opt := Subspace(optimizer.Adam().LearningRate(0.01).Done()).Mode(Temporal).Rank(3).WarmUp(5).CheckEvery(5).Done()
	r := newRun(t, opt)
	var logged []string
	mon := opt.NewMonitor(r.store)
	mon.Logf = func(format string, args ...any) { logged = append(logged, fmt.Sprintf(format, args...)) }
	for range 5 { // warm-up on zero inputs: the first layer's snapshots are all zero
		_, err := r.trainer.TrainStep(badBatch("zero input"))
		require.NoError(t, err)
		require.NoError(t, mon.Observe())
	}
	report, err := opt.Report(r.store)
	require.NoError(t, err)
	v, _ := report.variable(firstLayer)
	require.False(t, v.Valid, "zero snapshots teach no basis")
	for range 10 {
		r.step(t)
		require.NoError(t, mon.Observe())
	}
	// The log says which variable has no basis, and why it is replaced: not a contradictory
	// "declined" then "learned" with an explained variance averaged over a missing basis.
	log := strings.Join(logged, "\n")
	require.Contains(t, log, "still without a basis (zero or non-finite gradients, full steps until a check learns one): "+firstLayer, log)
	require.Contains(t, log, firstLayer+" had no basis (never learned, or damaged)", log)
	require.NotContains(t, log, "grown by more than", log)
	require.Contains(t, log, "1 basis update(s) declined by step 5: zero or non-finite gradient", log)
	report, err = opt.Report(r.store)
	require.NoError(t, err)
	v, _ = report.variable(firstLayer)
	require.Positive(t, report.RefreshesResidual, "the missing basis is replaced at a check")
	require.True(t, v.Valid)
	require.Less(t, v.Residual, 0.9)
}

// TestDamagedTemporalBasisIsReplaced: a stored temporal basis that is not orthonormal (a damaged
// checkpoint: here scaled by 1e30, finite) lifted steps by its scale and made the weights
// non-finite; it now counts as no basis: full steps until the next check replaces it.
func TestDamagedTemporalBasisIsReplaced(t *testing.T) {
	opt := Subspace(optimizer.Adam().LearningRate(0.01).Done()).Mode(Temporal).Rank(3).WarmUp(5).CheckEvery(5).Done()
	r := newRun(t, opt)
	for range 7 {
		r.step(t)
	}
	const basis = "/subspace/hidden/dense/weights_basis"
	v := r.store.GetVariable(basis)
	values := tensors.MustCopyFlatData[float32](v.MustValue())
	for i := range values {
		values[i] *= 1e30
	}
	require.NoError(t, v.SetValue(tensors.FromFlatDataAndDimensions(values, v.Shape().Dimensions...)))
	for range 10 {
		r.step(t)
	}
	requireFinite(t, r.snapshot(t))
	report, err := opt.Report(r.store)
	require.NoError(t, err)
	require.Positive(t, report.RefreshesResidual)
	require.Less(t, basisOrthonormalityError(t, r.store, basis), 1e-4)
}

// TestLastingShiftDoesNotLockTheGuard: a loss that jumps and stays above ExplodeFactor times its
// smoothed value (here the targets scaled by 1e4 for good: a data shift, not a spike) is skipped
// ExplodePatience times, then taken as the new level: the guard never locks training for good.
func TestLastingShiftDoesNotLockTheGuard(t *testing.T) {
	for _, mode := range []Mode{Matrix, Temporal} {
		opt := Subspace(optimizer.Adam().LearningRate(0.01).Done()).Mode(mode).Rank(3).WarmUp(5).Done()
		r := newRun(t, opt)
		var logged []string
		monitor := opt.NewMonitor(r.store)
		monitor.Logf = func(format string, args ...any) { logged = append(logged, fmt.Sprintf(format, args...)) }
		for range 20 {
			r.step(t)
			require.NoError(t, monitor.Observe())
		}
		var losses []float64
		for range 30 {
			metrics, err := r.trainer.TrainStep(badBatch("exploding"))
			require.NoError(t, err)
			require.NoError(t, monitor.Observe())
			losses = append(losses, float64(metrics[0].Value().(float32)))
		}
		report, err := opt.Report(r.store)
		require.NoError(t, err)
		require.Equal(t, int64(ExplodePatience), report.SkippedSteps, "%s mode: only the first steps of the shift are skipped", mode)
		// Said where users look: the Report, its String, and the Monitor's log.
		require.Equal(t, int64(1), report.LossRestarts, "%s mode: one shift, one restart of the smoothed loss", mode)
		require.Contains(t, report.String(), "the loss shifted to a new level 1 time(s)")
		require.Contains(t, strings.Join(logged, "\n"), "taken as a new level (step applied, smoothed loss restarted from it)")
		require.NotContains(t, strings.Join(logged, "\n"), "still without a basis", "%s mode: every basis was learned", mode)
		require.Less(t, losses[len(losses)-1], losses[ExplodePatience], "%s mode: training goes on at the new level", mode)
		requireFinite(t, r.snapshot(t))
	}
	// ExplodeFactor(0) turns the guard off: the shifted steps are all taken.
	opt := Subspace(optimizer.Adam().LearningRate(0.01).Done()).Rank(3).WarmUp(5).ExplodeFactor(0).Done()
	r := newRun(t, opt)
	for range 20 {
		r.step(t)
	}
	for range 5 {
		_, err := r.trainer.TrainStep(badBatch("exploding"))
		require.NoError(t, err)
	}
	report, err := opt.Report(r.store)
	require.NoError(t, err)
	require.Zero(t, report.SkippedSteps, "ExplodeFactor(0): no step is skipped for its loss")
	require.ErrorContains(t, Subspace(optimizer.Adam().Done()).ExplodeFactor(0.5).Validate(), "Policy.ExplodeFactor 0.5 would skip ordinary steps")
}

// TestNonFiniteStateIsRepaired: a NaN in a stored basis, in a coefficient moment or in the
// complement's last step length (a damaged checkpoint) used to make every later step skip, or to
// poison the weights: the basis restarts from its random start, the moment from zero, the length
// from the next step's, and the weights stay finite.
func TestNonFiniteStateIsRepaired(t *testing.T) {
	opt := Subspace(optimizer.Adam().LearningRate(0.01).Done()).Rank(3).WarmUp(5).Done()
	r := newRun(t, opt)
	for range 10 {
		r.step(t)
	}
	poison := func(path string) {
		v := r.store.GetVariable(path)
		require.NotNil(t, v, path)
		values := tensors.MustCopyFlatData[float32](v.MustValue())
		values[0] = float32(math.NaN())
		require.NoError(t, v.SetValue(tensors.FromFlatDataAndDimensions(values, v.Shape().Dimensions...)))
	}
	poison("/subspace/hidden/dense/weights_basis")
	poison("/AdamOptimizer/subspace/hidden/dense/weights_coefficients_2nd_moment")
	poison("/subspace/matrices_complement_step_length") // the only matrix's: would lock the growth limit
	for range 10 {
		r.step(t)
	}
	length := r.value(t, "/subspace/matrices_complement_step_length")
	require.Positive(t, length[0], "the complement's growth limit restarted from a finite length")
	report, err := opt.Report(r.store)
	require.NoError(t, err)
	require.LessOrEqual(t, report.SkippedSteps, int64(1), "the state is repaired, not skipped around forever")
	requireFinite(t, r.snapshot(t))
	require.Less(t, basisOrthonormalityError(t, r.store, "/subspace/hidden/dense/weights_basis"), 1e-5)
}
