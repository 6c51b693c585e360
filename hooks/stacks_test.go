package hooks

import (
	"path"
	"strings"
	"testing"

	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/train"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gradsub/gradsub/hooks/internal/step"
	"github.com/stretchr/testify/require"
)

// Where the base optimizer updates elementwise, the coefficients of matrices of one shape, rank
// and side are one stacked variable, and so is its optimizer state (internal/step/stacks.go).
// These tests pin what the layout must not lose: a checkpoint in the per-variable layout
// resumes exactly as the same checkpoint stacked, and the reverse, and a resume that projects
// other matrices finds each matrix's moments in its new slot.

// stackWidths gives three 16×16 matrices (layer_1 … layer_3): one stack of three.
var stackWidths = []int{16, 16, 16, 16}

// stackedMoments are the store's stacked variables of the base optimizer (outside the state
// scope), by name.
func stackedMoments(store *model.Store) map[string]*model.Variable {
	return baseStateIn(store, "stacks")
}

// baseStateIn is the base optimizer's variables (outside the state scope) kept for the state
// scope's sub-scope sub ("stacks", "packs"), by name.
func baseStateIn(store *model.Store, sub string) map[string]*model.Variable {
	out := map[string]*model.Variable{}
	for v := range store.IterVariables() {
		if strings.HasSuffix(v.Scope(), path.Join("/", StateScope, sub)) && !strings.HasPrefix(v.Scope(), "/"+StateScope) {
			out[v.Name()] = v
		}
	}
	return out
}

// perVariableMoments counts the base optimizer's per-variable coefficient moments.
func perVariableMoments(store *model.Store) int {
	n := 0
	for v := range store.IterVariables() {
		if !strings.HasPrefix(v.Scope(), "/"+StateScope) && strings.Contains(v.Name(), "_coefficients_") && strings.HasSuffix(v.Name(), "_moment") {
			n++
		}
	}
	return n
}

// TestCoefficientStacksResumeExactlyInEitherLayout: a checkpoint written with each matrix's
// coefficient state on its own resumes stacked with the same losses, step for step, as it
// resumes unstacked; and a stacked checkpoint resumes unstacked as it resumes stacked. The
// layout moves on the host: the old variables are gone.
func TestCoefficientStacksResumeExactlyInEitherLayout(t *testing.T) {
	defer func() { step.StackCoefficients = true }()
	for _, writtenStacked := range []bool{false, true} {
		step.StackCoefficients = writtenStacked
		dir, written := savedAfter(t, vectorOptimizer(), 20, stackWidths...)
		require.Equal(t, writtenStacked, len(stackedMoments(written)) > 0, "written stacked: %v", writtenStacked)
		resume := func(stacked bool) (*model.Store, []float64) {
			step.StackCoefficients = stacked
			return resumedLosses(t, dir, vectorOptimizer(), 12, nil, stackWidths...)
		}
		asWritten, want := resume(writtenStacked)
		other, got := resume(!writtenStacked)
		require.Equal(t, want, got, "losses after resuming a checkpoint written stacked=%v in the other layout", writtenStacked)
		stacked, unstacked := asWritten, other
		if !writtenStacked {
			stacked, unstacked = other, asWritten
		}
		moments := stackedMoments(stacked)
		require.Len(t, moments, 2, "Adam's two moments, stacked: %v", moments)
		for _, v := range moments {
			require.Equal(t, []int{3, 3, 16}, v.Shape().Dimensions, v.Path())
		}
		require.Equal(t, 2, perVariableMoments(stacked), "layer_0 alone keeps its own")
		require.Empty(t, stackedMoments(unstacked))
		require.Equal(t, 8, perVariableMoments(unstacked))
	}
}

// TestCoefficientStacksFollowTheMatricesOnResume: resumed with another selection, the stack
// holds other matrices; each matrix still in it finds its moments in its new slot. (The resumed
// build's first step is skipped, a NaN batch, so the store holds the state as the build lined
// it up.)
func TestCoefficientStacksFollowTheMatricesOnResume(t *testing.T) {
	matrices := []string{"/layer_1/dense/weights", "/layer_2/dense/weights", "/layer_3/dense/weights"}
	before := Subspace(optimizer.Adam().LearningRate(0.01).Done()).Rank(3).WarmUp(6).CheckEvery(4).Variables(matrices...).Done()
	r := deepRunOf(t, model.NewStore(), before, stackWidths...)
	for range 14 {
		r.step(t)
	}
	slots := func(name string) [][]float32 {
		v := stackedMoments(r.store)[name]
		require.NotNil(t, v, "%s in %v", name, stackedMoments(r.store))
		flat := tensors.MustCopyFlatData[float32](v.MustValue())
		k := v.Shape().Dim(0)
		out := make([][]float32, k)
		for i := range out {
			out[i] = flat[i*len(flat)/k : (i+1)*len(flat)/k]
		}
		return out
	}
	var name string
	for n := range stackedMoments(r.store) {
		if strings.HasSuffix(n, "_1st_moment") {
			name = n
		}
	}
	old := slots(name)
	require.Len(t, old, 3)
	// layer_1 leaves: layer_2 and layer_3 move from slots 1, 2 to 0, 1.
	after := Subspace(optimizer.Adam().LearningRate(0.01).Done()).Rank(3).WarmUp(6).CheckEvery(4).Variables(matrices[1:]...).Done()
	resumed := deepRunOf(t, r.store, after, stackWidths...)
	_, err := resumed.trainer.TrainStep(badBatch("nan"))
	require.NoError(t, err)
	now := slots(name)
	require.Len(t, now, 2)
	require.Equal(t, old[1], now[0], "layer_2's first moment")
	require.Equal(t, old[2], now[1], "layer_3's first moment")
	require.NotEqual(t, now[0], now[1])
}

// TestCoefficientStacksSurviveARankChange: the rank rule resizes a stacked matrix's state (its
// stack goes back to per-variable state first, and the next build stacks it again): each
// member's moments keep their values in the kept directions, and training goes on stacked.
func TestCoefficientStacksSurviveARankChange(t *testing.T) {
	pol := DefaultPolicy()
	pol.CheckEvery, pol.GrowAbove, pol.ShrinkBelow, pol.RankPatience = 3, 0.05, 0.01, 2
	opt := Subspace(optimizer.Adam().LearningRate(0.01).Done()).Rank(2).WarmUp(4).Policy(pol).RankBounds(1, 8).Done()
	r := deepRunOf(t, model.NewStore(), opt, stackWidths...)
	mon := opt.NewMonitor(r.store)
	mon.Trainer = r.trainer
	for range 40 {
		r.step(t)
		before := map[string][]float32{} // each stacked matrix's first moment, by path
		for _, v := range stackedMoments(r.store) {
			if strings.HasSuffix(v.Name(), "_1st_moment") {
				k, flat := v.Shape().Dim(0), tensors.MustCopyFlatData[float32](v.MustValue())
				for i, p := range stackMembers(t, r.store, v.Name()) {
					before[p] = flat[i*len(flat)/k : (i+1)*len(flat)/k]
				}
			}
		}
		changes := len(mon.RankChanges)
		require.NoError(t, mon.Observe())
		if len(mon.RankChanges) == changes {
			continue
		}
		checked := false
		for _, c := range mon.RankChanges[changes:] {
			old, ok := before[c.Variable]
			if !ok {
				continue // layer_0, alone
			}
			scope, name := model.SplitPath(c.Variable)
			moment := r.store.GetVariable(path.Join("/AdamOptimizer", StateScope, scope, name+"_coefficients_1st_moment"))
			require.NotNil(t, moment, "%s's moment, per variable after the change", c.Variable)
			dims := moment.Shape().Dimensions
			require.Equal(t, c.To, dims[0], "%s: [r, n]", c.Variable)
			now := tensors.MustCopyFlatData[float32](moment.MustValue())
			cols := dims[1]
			for i := range c.From {
				require.Equal(t, old[i*cols:(i+1)*cols], now[i*cols:(i+1)*cols], "%s: row %d kept", c.Variable, i)
			}
			checked = true
		}
		if !checked {
			continue
		}
		r.step(t)
		require.NotEmpty(t, stackedMoments(r.store), "stacked again after the change")
		return
	}
	t.Fatal("no rank change in 40 steps")
}

// stackMembers is the paths of the matrices of the stack whose moment is named name.
func stackMembers(t *testing.T, store *model.Store, name string) []string {
	var ids *model.Variable
	prefix := step.SvStackMembers.Name + "_"
	for v := range store.IterVariables() {
		key, isMembers := strings.CutPrefix(v.Name(), prefix)
		if isMembers && v.Scope() == path.Join("/", StateScope, "stacks") && strings.HasPrefix(name, step.SvCoefficients.Name+"_"+key+"_") {
			ids = v
		}
	}
	require.NotNil(t, ids, name)
	var paths []string
	for _, id := range tensors.MustCopyFlatData[int64](ids.MustValue()) {
		for _, p := range []string{"/layer_1/dense/weights", "/layer_2/dense/weights", "/layer_3/dense/weights"} {
			if int64(step.PathHash(p)) == id {
				paths = append(paths, p)
			}
		}
	}
	return paths
}

// foreignAdam is GoMLX's Adam behind a type of another package: to the projector, an optimizer
// that might update a variable as a whole.
type foreignAdam struct{ optimizer.Interface }

func (f foreignAdam) UpdateGraphWithGradients(scope *model.Scope, grads []*Node, lossDType dtypes.DType) {
	f.Interface.(train.OptimizeWithGradients).UpdateGraphWithGradients(scope, grads, lossDType)
}

// TestOnlyElementwiseOptimizersStepStacks: a base optimizer not GoMLX's gets each matrix's
// coefficients on their own; GoMLX's Adam, stepping them stacked, trains the same to the bit.
func TestOnlyElementwiseOptimizersStepStacks(t *testing.T) {
	trace := func(base optimizer.Interface) (*model.Store, []float64) {
		r := deepRunOf(t, model.NewStore(), Subspace(base).Rank(3).WarmUp(6).CheckEvery(4).Done(), stackWidths...)
		var losses []float64
		for range 12 {
			losses = append(losses, r.step(t))
		}
		return r.store, losses
	}
	stackedStore, stacked := trace(optimizer.Adam().LearningRate(0.01).Done())
	foreignStore, foreign := trace(foreignAdam{optimizer.Adam().LearningRate(0.01).Done()})
	require.NotEmpty(t, stackedMoments(stackedStore))
	require.Empty(t, stackedMoments(foreignStore), "a foreign optimizer steps each matrix's coefficients")
	require.Equal(t, 8, perVariableMoments(foreignStore))
	require.Equal(t, stacked, foreign)
}
