package hooks

import (
	"strings"
	"testing"
	"time"

	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/model/checkpoint"
	"github.com/gomlx/gomlx/ml/train"
	"github.com/gomlx/gomlx/ml/train/loss"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/stretchr/testify/require"
)

// TestAdaptiveRankRecompilesOncePerChange: the rank rule grows a variable whose residual stays
// high, migrating its state and recompiling the step once per change; a checkpoint taken after
// a change resumes exactly, at the new rank.
func TestAdaptiveRankRecompilesOncePerChange(t *testing.T) {
	newOpt := func() *Optimizer {
		pol := DefaultPolicy()
		pol.CheckEvery, pol.GrowAbove, pol.ShrinkBelow, pol.RankPatience = 3, 0.05, 0.01, 2
		return Subspace(optimizer.Adam().LearningRate(0.01).Done()).Rank(2).WarmUp(4).
			Policy(pol).RankBounds(1, 8).Done()
	}
	const total, stop = 40, 30
	opt := newOpt()
	whole := newRun(t, opt)
	mon := opt.NewMonitor(whole.store)
	mon.Trainer = whole.trainer
	var want []float64
	var saved string
	for i := range total {
		want = append(want, whole.step(t))
		require.NoError(t, mon.Observe())
		if i+1 == stop {
			saved = t.TempDir()
			saver, err := checkpoint.Build(whole.store).Dir(saved).Immediate().Done()
			require.NoError(t, err)
			require.NoError(t, saver.Save())
		}
	}
	require.NotEmpty(t, mon.RankChanges)
	t.Logf("rank changes: %v", mon.RankChanges)
	for _, c := range mon.RankChanges {
		require.Equal(t, 2*c.From, c.To, "%s", c)
		require.Contains(t, c.Reason, "residual above")
	}
	require.Equal(t, 1+len(mon.RankChanges), opt.Builds(), "one recompilation per change")
	require.Equal(t, 8, opt.Plan()[0].Rank, "grown to MaxRank")
	basis := whole.store.GetVariable("/subspace/hidden/dense/weights_basis")
	require.Equal(t, []int{12, 8}, basis.Shape().Dimensions)
	for v := range whole.store.IterVariables() {
		if strings.Contains(v.Path(), "hidden/dense/weights_coefficients") {
			require.Equal(t, []int{8, 16}, v.Shape().Dimensions, "%s migrated", v.Path())
		}
	}
	report, err := opt.Report(whole.store)
	require.NoError(t, err)
	require.Equal(t, int64(len(mon.RankChanges)), report.RankChanges)

	// Resume from the checkpoint in a new store: the rank comes from the saved basis.
	store := model.NewStore()
	_, err = checkpoint.Build(store).Dir(saved).Immediate().Done()
	require.NoError(t, err)
	resumedOpt := newOpt()
	resumed := &run{store: store, trainer: train.NewTrainer(testBackend(t), store, mlp, loss.MeanSquaredError, resumedOpt, nil, nil)}
	rmon := resumedOpt.NewMonitor(store)
	rmon.Trainer = resumed.trainer
	for i := stop; i < total; i++ {
		require.Equal(t, want[i], resumed.step(t), "step %d differs after resuming", i+1)
		require.NoError(t, rmon.Observe())
	}
}

// TestStepTimesOverhead: a gated step costs its time beyond the median plain step, as a share
// of all the steps' time.
func TestStepTimesOverhead(t *testing.T) {
	ms := time.Millisecond
	s := StepTimes{Plain: []time.Duration{10 * ms, 11 * ms, 10 * ms, 40 * ms}, WarmUp: []time.Duration{25 * ms}, Controller: []time.Duration{31 * ms, 9 * ms}}
	total := float64(10 + 11 + 10 + 40 + 25 + 31 + 9)
	require.InDelta(t, 20/total, s.ControllerOverhead(), 1e-12, "31 ms − the 11 ms median; a faster check adds nothing")
	require.InDelta(t, 14/total, s.WarmUpOverhead(), 1e-12)
	require.Zero(t, StepTimes{}.ControllerOverhead())
}

// TestGrownBasisIsComplete: when the rank rule grows a basis, its new columns were zero-padded,
// and a zero column's power product is zero: the new directions never came alive (an
// orthonormality check that masks zero columns did not see it). They now start orthonormal to the
// kept ones.
func TestGrownBasisIsComplete(t *testing.T) {
	pol := DefaultPolicy()
	pol.CheckEvery, pol.GrowAbove, pol.ShrinkBelow, pol.RankPatience = 3, 0.05, 0.01, 2
	opt := Subspace(optimizer.Adam().LearningRate(0.01).Done()).Rank(2).WarmUp(4).Policy(pol).RankBounds(1, 8).Done()
	r := newRun(t, opt)
	mon := opt.NewMonitor(r.store)
	mon.Trainer = r.trainer
	for range 40 {
		r.step(t)
		require.NoError(t, mon.Observe())
	}
	require.Greater(t, opt.Plan()[0].Rank, 2, "the rank grew")
	q := r.value(t, "/subspace/hidden/dense/weights_basis")
	rank := opt.Plan()[0].Rank
	for j := range rank {
		for k := range rank {
			var dot float64
			for i := range len(q) / rank {
				dot += q[i*rank+j] * q[i*rank+k]
			}
			want := 0.0
			if j == k {
				want = 1
			}
			require.InDelta(t, want, dot, 1e-5, "columns %d and %d of the grown basis", j, k)
		}
	}
}
