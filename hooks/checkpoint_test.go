package hooks

import (
	"fmt"
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/model/checkpoint"
	"github.com/gomlx/gomlx/ml/train"
	"github.com/gomlx/gomlx/ml/train/loss"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gradsub/gradsub/projector"
	"github.com/stretchr/testify/require"
)

// TestCheckpointResumesExactly: the projector's state (bases, snapshots, coefficients' optimizer
// moments, counters, the smoothed loss) lives in GoMLX variables, so a run stopped, saved and
// resumed in a fresh store continues exactly as the uninterrupted run, refreshes included.
func TestCheckpointResumesExactly(t *testing.T) {
	for _, mode := range []Mode{Matrix, Temporal} {
		t.Run(mode.String(), func(t *testing.T) {
			newOpt := func() *Optimizer {
				// A plain residual threshold (no drift margin): refreshes happen on every backend's
				// numerics, not only where the residual happens to grow (on xla:cuda the default
				// margin gave none in the resumed half).
				policy := DefaultPolicy()
				policy.DriftMargin = 0
				// And a curvature rule that fires at small jumps: with the step-length rule the
				// toy's residual falls steadily, and refreshes must still come.
				policy.CurvatureFactor = 1.5
				return Subspace(optimizer.Adam().LearningRate(0.01).Done()).Mode(mode).
					Rank(3).WarmUp(6).Policy(policy).CheckEvery(4).ResidualThreshold(0.05).Done()
			}
			const total = 40
			newRunOf := func(store *model.Store, opt *Optimizer) *run {
				store.SetParam(model.ParamInitialSeed, int64(7))
				return &run{store: store, trainer: train.NewTrainer(testBackend(t), store, mlp, loss.MeanSquaredError, opt, nil, nil)}
			}
			store, opt := requireResumesExactly(t, newRunOf, newOpt, total, 20)
			report, err := opt.Report(store)
			require.NoError(t, err)
			require.Equal(t, int64(total), report.Steps)
			require.Positive(t, report.Refreshes, "the resumed half must include refreshes")
			// The projector's state variables are non-trainable again after loading.
			for v := range store.IterVariables() {
				if v.Trainable {
					require.NotContains(t, v.Path(), "/"+StateScope+"/", "%s came back trainable", v.Path())
				}
			}
		})
	}
}

// requireResumesExactly trains total steps in one run, and stop steps in another that is saved
// to a checkpoint and resumed in a fresh store (a new process: a new trainer and optimizer)
// for the rest: every step's loss must be the same. It returns the resumed store and optimizer.
func requireResumesExactly(t *testing.T, newRun func(*model.Store, *Optimizer) *run, newOpt func() *Optimizer, total, stop int) (*model.Store, *Optimizer) {
	t.Helper()
	whole := newRun(model.NewStore(), newOpt())
	var want []float64
	for range total {
		want = append(want, whole.step(t))
	}
	dir := t.TempDir()
	first := newRun(model.NewStore(), newOpt())
	for i := range stop {
		require.Equal(t, want[i], first.step(t))
	}
	saver, err := checkpoint.Build(first.store).Dir(dir).Immediate().Done()
	require.NoError(t, err)
	require.NoError(t, saver.Save())
	store := model.NewStore()
	_, err = checkpoint.Build(store).Dir(dir).Immediate().Done()
	require.NoError(t, err)
	opt := newOpt()
	resumed := newRun(store, opt)
	for i := stop; i < total; i++ {
		require.Equal(t, want[i], resumed.step(t), "step %d differs after resuming", i+1)
	}
	return store, opt
}

// TestResumeWithAnotherRankSaysSo: a checkpoint's bases at rank 3 resumed with Rank(5) used to be
// kept silently (the plan's header said 5, the variable's line 3). It is an error naming both
// ranks and the ways out, unless the rank may adapt.
func TestResumeWithAnotherRankSaysSo(t *testing.T) {
	r := newRun(t, Subspace(optimizer.Adam().Done()).Rank(3).Done())
	r.step(t)
	other := Subspace(optimizer.Adam().Done()).Rank(5).Done()
	trainer := train.NewTrainer(testBackend(t), r.store, mlp, loss.MeanSquaredError, other, nil, nil)
	_, err := trainer.TrainStep(r.batch())
	require.ErrorContains(t, err, "holds /hidden/dense/weights's basis at rank 3 (from a checkpoint), but Rank(5) is configured: resume with Rank(3)")
	adaptive := Subspace(optimizer.Adam().Done()).Rank(5).RankBounds(2, 8).Done()
	trainer = train.NewTrainer(testBackend(t), r.store, mlp, loss.MeanSquaredError, adaptive, nil, nil)
	_, err = trainer.TrainStep(r.batch())
	require.NoError(t, err, "with RankBounds the checkpoint's rank is kept")
	require.Equal(t, 3, adaptive.Plan()[0].Rank)
}

// TestReportAndMonitorAfterAResume: before the resumed optimizer's first step, Report reads the
// store's counters (it said 0 steps), and a new Monitor logs only what happens from then on (it
// logged the checkpoint's old events as new).
func TestReportAndMonitorAfterAResume(t *testing.T) {
	r := newRun(t, Subspace(optimizer.Adam().Done()).Rank(3).WarmUp(4).Done())
	for range 12 {
		r.step(t)
	}
	resumed := Subspace(optimizer.Adam().Done()).Rank(3).WarmUp(4).Done()
	report, err := resumed.Report(r.store)
	require.NoError(t, err)
	require.Equal(t, int64(12), report.Steps)
	mon := resumed.NewMonitor(r.store)
	var logged []string
	mon.Logf = func(format string, args ...any) { logged = append(logged, fmt.Sprintf(format, args...)) }
	trainer := train.NewTrainer(testBackend(t), r.store, mlp, loss.MeanSquaredError, resumed, nil, nil)
	_, err = trainer.TrainStep(r.batch())
	require.NoError(t, err)
	require.NoError(t, mon.Observe())
	require.Empty(t, logged, "no old event is logged as new")
	require.Empty(t, mon.Events)
}

// TestResumeWithOtherOptionsSaysWhich: a store resumed with another WarmUp (temporal snapshots)
// or Mode stopped with GoMLX's shape error naming a state variable; the error now says which
// options differ and what to do.
func TestResumeWithOtherOptionsSaysWhich(t *testing.T) {
	adam := func() optimizer.Interface { return optimizer.Adam().Done() }
	for _, c := range []struct {
		name        string
		saved, next *Optimizer
		want        string
	}{
		{"WarmUp", Subspace(adam()).Mode(Temporal).Rank(3).WarmUp(6).Done(), Subspace(adam()).Mode(Temporal).Rank(3).WarmUp(8).Done(),
			"its WarmUp differs (the checkpoint's is 6, this configuration's 8)"},
		{"temporal Rank", Subspace(adam()).Mode(Temporal).Rank(3).WarmUp(6).Done(), Subspace(adam()).Mode(Temporal).Rank(2).WarmUp(6).Done(),
			"its temporal Rank differs (the checkpoint's is 3, this configuration's 2)"},
		{"temporal to matrix", Subspace(adam()).Mode(Temporal).Rank(3).WarmUp(6).Done(), Subspace(adam()).Rank(3).Done(),
			"its Mode differs (the checkpoint trained this variable in Mode(hooks.Temporal), this configuration in matrix mode)"},
		{"matrix to temporal", Subspace(adam()).Rank(3).Done(), Subspace(adam()).Mode(Temporal).Rank(3).WarmUp(6).Done(),
			"its Mode differs (the checkpoint trained this variable in matrix mode, this configuration in Mode(hooks.Temporal))"},
		{"Side", Subspace(adam()).Rank(3).Side(projector.Left).Done(), Subspace(adam()).Rank(3).Side(projector.Right).Done(),
			"its Side differs (the checkpoint's basis has 12 rows, this configuration's side has 16)"},
	} {
		r := newRun(t, c.saved)
		r.step(t)
		trainer := train.NewTrainer(testBackend(t), r.store, mlp, loss.MeanSquaredError, c.next, nil, nil)
		_, err := trainer.TrainStep(r.batch())
		require.ErrorContains(t, err, "(from a checkpoint), but this configuration needs", c.name)
		require.ErrorContains(t, err, c.want, c.name)
		require.ErrorContains(t, err, "Optimizer.Clear", c.name)
	}
}

// TestDamagedStateIsNamedAsDamage: a state variable stored with a dtype or a number of axes that
// no option gives (a basis as float64 in a float32 model, the matrices' residuals as a matrix) is named as
// damage, with the variable and both shapes, not blamed on the configuration.
func TestDamagedStateIsNamedAsDamage(t *testing.T) {
	for _, c := range []struct {
		path  string
		value *tensors.Tensor
		found string
	}{
		{"/subspace/hidden/dense/weights_basis", tensors.FromShape(shapes.Make(dtypes.Float64, 12, 3)), "(Float64)[12, 3]"},
		{"/subspace/matrices_residual", tensors.FromShape(shapes.Make(dtypes.Float32, 2, 2)), "(Float32)[2, 2]"},
	} {
		opt := Subspace(optimizer.Adam().Done()).Rank(3).Done()
		r := newRun(t, opt)
		r.step(t)
		v := r.store.GetVariable(c.path)
		require.NotNil(t, v, c.path)
		require.NoError(t, r.store.DeleteVariable(c.path))
		scope, name := model.SplitPath(c.path)
		_, err := r.store.Scope(scope).CreateVariable(name, c.value)
		require.NoError(t, err)
		trainer := train.NewTrainer(testBackend(t), r.store, mlp, loss.MeanSquaredError, Subspace(optimizer.Adam().Done()).Rank(3).Done(), nil, nil)
		_, err = trainer.TrainStep(r.batch())
		require.ErrorContains(t, err, "the store's "+c.path+" is damaged")
		require.ErrorContains(t, err, c.found)
		require.ErrorContains(t, err, "Optimizer.Clear")
		require.NotContains(t, err.Error(), "Mode, Rank, Side or WarmUp")
	}
}
