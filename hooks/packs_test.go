package hooks

import (
	"path"
	"strings"
	"testing"

	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gradsub/gradsub/hooks/internal/step"
	"github.com/stretchr/testify/require"
)

// Where the base optimizer updates elementwise, the small variables the projector leaves alone
// (biases, here also the unprojected 16×16 matrices) are one vector for it, and so is its state
// (internal/step/packs.go). These tests pin what the layout must not lose: training is the same
// to the bit, a checkpoint resumes exactly in either layout, a member's state follows it when
// the pack changes, and the projector disabled finds the state where stock keeps it.

// packedMoments are the store's packed base-optimizer state (outside the state scope), by name.
func packedMoments(store *model.Store) map[string]*model.Variable { return baseStateIn(store, "packs") }

// biasMoments counts the base optimizer's per-variable moments of the biases.
func biasMoments(store *model.Store) int {
	n := 0
	for v := range store.IterVariables() {
		if strings.HasPrefix(v.Name(), "biases_") && strings.HasSuffix(v.Name(), "_moment") {
			n++
		}
	}
	return n
}

// packedMembers is the paths of the variables of the store's float32 pack, in order.
func packedMembers(t *testing.T, store *model.Store) []string {
	t.Helper()
	ids := store.GetVariable(path.Join("/", StateScope, "packs", step.SvPackMembers.Name+"_Float32"))
	require.NotNil(t, ids)
	var paths []string
	for _, id := range tensors.MustCopyFlatData[int64](ids.MustValue()) {
		for m := range store.IterVariables() {
			if int64(step.PathHash(m.Path())) == id {
				paths = append(paths, m.Path())
			}
		}
	}
	return paths
}

// packedSlice is the part of the packed state named name that belongs to the variable at p: the
// pack's members are sorted by path, each its size.
func packedSlice(t *testing.T, store *model.Store, name, p string) []float32 {
	t.Helper()
	v := packedMoments(store)[name]
	require.NotNil(t, v, "%s in %v", name, packedMoments(store))
	key := strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(name, step.SvPackValues.Name+"_"), "_1st_moment"), "_2nd_moment")
	ids := store.GetVariable(path.Join("/", StateScope, "packs", step.SvPackMembers.Name+"_"+key))
	require.NotNil(t, ids)
	offset := 0
	flat := tensors.MustCopyFlatData[float32](v.MustValue())
	for _, id := range tensors.MustCopyFlatData[int64](ids.MustValue()) {
		for m := range store.IterVariables() {
			if int64(step.PathHash(m.Path())) == id {
				if m.Path() == p {
					return flat[offset : offset+m.Shape().Size()]
				}
				offset += m.Shape().Size()
			}
		}
	}
	t.Fatalf("%s is not in the pack", p)
	return nil
}

// TestPacksStepAsStock: packed, the small unprojected variables train as they train one by one:
// the same losses, step for step, and the same weights. The packed layout holds no per-variable
// moments of them.
func TestPacksStepAsStock(t *testing.T) {
	defer func() { step.PackVariables = true }()
	runWith := func(packed bool) (*run, []float64) {
		step.PackVariables = packed
		r := deepRunOf(t, model.NewStore(), vectorOptimizer(), stackWidths...)
		var losses []float64
		for range 16 {
			losses = append(losses, r.step(t))
		}
		return r, losses
	}
	packed, want := runWith(true)
	alone, got := runWith(false)
	require.Equal(t, want, got)
	require.Equal(t, alone.snapshot(t)["/out/dense/biases"], packed.snapshot(t)["/out/dense/biases"])
	require.Len(t, packedMoments(packed.store), 2, "Adam's two moments, packed")
	require.Zero(t, biasMoments(packed.store))
	require.Empty(t, packedMoments(alone.store))
	require.Equal(t, 10, biasMoments(alone.store), "5 biases, 2 moments each")
}

// TestPacksResumeExactlyInEitherLayout: a checkpoint written per variable resumes packed with the
// same losses as it resumes per variable, and a packed one resumes per variable as packed.
func TestPacksResumeExactlyInEitherLayout(t *testing.T) {
	defer func() { step.PackVariables = true }()
	for _, writtenPacked := range []bool{false, true} {
		step.PackVariables = writtenPacked
		dir, written := savedAfter(t, vectorOptimizer(), 20, stackWidths...)
		require.Equal(t, writtenPacked, len(packedMoments(written)) > 0, "written packed: %v", writtenPacked)
		resume := func(packed bool) (*model.Store, []float64) {
			step.PackVariables = packed
			return resumedLosses(t, dir, vectorOptimizer(), 12, nil, stackWidths...)
		}
		asWritten, want := resume(writtenPacked)
		other, got := resume(!writtenPacked)
		require.Equal(t, want, got, "losses after resuming a checkpoint written packed=%v in the other layout", writtenPacked)
		if writtenPacked {
			asWritten, other = other, asWritten // asWritten: the per-variable store
		}
		require.Empty(t, packedMoments(asWritten))
		require.Len(t, packedMoments(other), 2)
	}
}

// TestPackedStateFollowsItsVariables: resumed with another selection, a matrix that joins the
// projection leaves the pack with its moments, and the variables that stay find theirs at their
// new offsets. (The resumed build's first step is skipped, a NaN batch, so the store holds the
// state as the build lined it up.)
func TestPackedStateFollowsItsVariables(t *testing.T) {
	newOpt := func(matrices ...string) *Optimizer {
		return Subspace(optimizer.Adam().LearningRate(0.01).Done()).Rank(3).WarmUp(6).CheckEvery(4).Variables(matrices...).Done()
	}
	r := deepRunOf(t, model.NewStore(), newOpt("/layer_1/dense/weights"), stackWidths...)
	for range 14 {
		r.step(t)
	}
	name := step.SvPackValues.Name + "_Float32_1st_moment"
	stays := []string{"/layer_3/dense/biases", "/layer_3/dense/weights", "/out/dense/biases"}
	before := map[string][]float32{}
	for _, p := range append(stays, "/layer_2/dense/weights") {
		before[p] = packedSlice(t, r.store, name, p)
	}
	resumed := deepRunOf(t, r.store, newOpt("/layer_1/dense/weights", "/layer_2/dense/weights"), stackWidths...)
	_, err := resumed.trainer.TrainStep(badBatch("nan"))
	require.NoError(t, err)
	for _, p := range stays {
		require.Equal(t, before[p], packedSlice(t, r.store, name, p), p)
	}
	// layer_2 is projected now: out of the pack, its moments back where stock keeps them.
	moment := r.store.GetVariable("/AdamOptimizer/layer_2/dense/weights_1st_moment")
	require.NotNil(t, moment)
	require.Equal(t, before["/layer_2/dense/weights"], tensors.MustCopyFlatData[float32](moment.MustValue()))

	require.NotContains(t, packedMembers(t, r.store), "/layer_2/dense/weights")
}

// TestDisabledProjectorFindsStockState: a packed store resumed with the projector disabled
// unpacks on the host, and stock Adam steps from the same state as it does from the same run
// written per variable: the same loss and the same moments, to the bit.
func TestDisabledProjectorFindsStockState(t *testing.T) {
	defer func() { step.PackVariables = true }()
	stockStep := func(packed bool) (float64, map[string][]float64) {
		step.PackVariables = packed
		r := deepRunOf(t, model.NewStore(), vectorOptimizer(), stackWidths...)
		for range 14 {
			r.step(t)
		}
		require.Equal(t, packed, len(packedMoments(r.store)) > 0)
		disabled := deepRunOf(t, r.store, Subspace(optimizer.Adam().LearningRate(0.01).Done()).Enabled(false).Done(), stackWidths...)
		disabled.step(t)
		loss := disabled.step(t)
		require.Empty(t, packedMoments(r.store))
		return loss, disabled.snapshot(t)
	}
	packedLoss, packed := stockStep(true)
	aloneLoss, alone := stockStep(false)
	require.Equal(t, aloneLoss, packedLoss)
	for _, p := range []string{"/AdamOptimizer/out/dense/biases_1st_moment", "/AdamOptimizer/layer_3/dense/biases_2nd_moment", "/out/dense/biases"} {
		require.NotNil(t, alone[p], p)
		require.Equal(t, alone[p], packed[p], p)
	}
}
