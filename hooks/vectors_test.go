package hooks

import (
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/model/checkpoint"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gradsub/gradsub/hooks/internal/rules"
	"github.com/gradsub/gradsub/hooks/internal/step"
	"github.com/stretchr/testify/require"
)

// Matrix mode keeps each matrix's scalar state as one vector per entry over the matrices
// (internal/step/vectors.go). These tests pin what the layout must not lose: a checkpoint
// written before it (a scalar per matrix and entry) resumes exactly, and a resume that projects
// other matrices finds each matrix's values at its new position.

// vectorWidths has two matrices of one shape and two of others, so that the vectors' order (by
// path) differs from the stacks' (by shape).
var vectorWidths = []int{16, 16, 32, 16}

func vectorOptimizer() *Optimizer {
	return Subspace(optimizer.Adam().LearningRate(0.01).Done()).Rank(3).WarmUp(6).CheckEvery(4).RankBounds(2, 6).Done()
}

// matrixVectors are the per-matrix vectors of the store's state, by entry name.
func matrixVectors(store *model.Store) map[string]*model.Variable {
	root := path.Join("/", StateScope)
	out := map[string]*model.Variable{}
	for v := range store.IterVariables() {
		scope, name := model.SplitPath(v.Path())
		if scope == root && strings.HasPrefix(name, rules.MatricesPrefix) {
			out[strings.TrimPrefix(name, rules.MatricesPrefix)] = v
		}
	}
	return out
}

// savedAfter trains a deep run of opt for steps steps and saves it: the checkpoint's directory
// and the run's store.
func savedAfter(t *testing.T, opt *Optimizer, steps int, widths ...int) (string, *model.Store) {
	t.Helper()
	first := deepRunOf(t, model.NewStore(), opt, widths...)
	for range steps {
		first.step(t)
	}
	dir := t.TempDir()
	saver, err := checkpoint.Build(first.store).Dir(dir).Immediate().Done()
	require.NoError(t, err)
	require.NoError(t, saver.Save())
	return dir, first.store
}

// resumedLosses loads the checkpoint in dir into a new store, lets edit change it (nil: none)
// once the run is built, and trains steps steps of opt: the store and the losses.
func resumedLosses(t *testing.T, dir string, opt *Optimizer, steps int, edit func(*model.Store), widths ...int) (*model.Store, []float64) {
	t.Helper()
	store := model.NewStore()
	_, err := checkpoint.Build(store).Dir(dir).Immediate().Done()
	require.NoError(t, err)
	r := deepRunOf(t, store, opt, widths...)
	if edit != nil {
		edit(store)
	}
	var losses []float64
	for range steps {
		losses = append(losses, r.step(t))
	}
	return store, losses
}

// TestCheckpointWithPerMatrixScalarsResumesExactly: a checkpoint of the layout before the
// vectors (each matrix's validity, residuals, complement length, step factor and rank streaks
// as its own scalar variable) resumes as the same checkpoint in today's layout: the same losses,
// step by step, and the old variables are gone into the vectors.
func TestCheckpointWithPerMatrixScalarsResumesExactly(t *testing.T) {
	dir, _ := savedAfter(t, vectorOptimizer(), 20, vectorWidths...)
	_, want := resumedLosses(t, dir, vectorOptimizer(), 12, nil, vectorWidths...)
	store, got := resumedLosses(t, dir, vectorOptimizer(), 12, func(store *model.Store) { toPerMatrixScalars(t, store) }, vectorWidths...)
	require.Equal(t, want, got, "losses after resuming the old layout")
	root := path.Join("/", StateScope)
	for _, m := range []string{"/layer_0/dense/weights", "/layer_3/dense/weights"} {
		for _, e := range []rules.StateVar{step.SvValid, step.SvResidual, step.SvFreshResidual, step.SvComplementLen, step.SvStepLogScale, step.SvHighChecks, step.SvLowChecks} {
			require.Nil(t, store.GetVariable(e.OfVariable(root, m)), "moved into %s", e.OfMatrices(root))
		}
	}
	require.Len(t, matrixVectors(store), 7, "a vector an entry")
	require.NotNil(t, store.GetVariable(step.SvMatrices.Of(root)), "the matrices' identities")
}

// toPerMatrixScalars rewrites the store's per-matrix vectors as the layout before them kept
// them: a scalar variable per matrix (in path order) and entry, and no identities.
func toPerMatrixScalars(t *testing.T, store *model.Store) {
	root := path.Join("/", StateScope)
	var matrices []string
	for v := range store.IterVariables() {
		if strings.HasSuffix(v.Path(), "_"+step.SvBasis.Name) && strings.HasPrefix(v.Path(), root+"/") {
			scope, name := model.SplitPath(strings.TrimPrefix(v.Path(), root))
			matrices = append(matrices, path.Join(scope, strings.TrimSuffix(name, "_"+step.SvBasis.Name)))
		}
	}
	slices.Sort(matrices)
	require.Len(t, matrices, 4, "layer_0 … layer_3 (the output's 16×1 is left out)")
	require.NoError(t, store.DeleteVariable(step.SvMatrices.Of(root))) // no identities before
	for entry, v := range matrixVectors(store) {
		value, err := v.MustValue().LocalClone() // deleting the variable frees its value
		require.NoError(t, err)
		require.NoError(t, store.DeleteVariable(v.Path()))
		require.Equal(t, len(matrices), value.Shape().Size(), entry)
		for i, m := range matrices {
			scope, name := model.SplitPath(rules.StateVar{Name: entry}.OfVariable(root, m))
			var scalar *tensors.Tensor
			switch value.DType() {
			case dtypes.Float32:
				scalar = tensors.FromScalar(tensors.MustCopyFlatData[float32](value)[i])
			case dtypes.Int32:
				scalar = tensors.FromScalar(tensors.MustCopyFlatData[int32](value)[i])
			default:
				t.Fatalf("%s: teach the test %s", entry, value.DType())
			}
			_, err := store.Scope(scope).CreateVariable(name, scalar)
			require.NoError(t, err)
		}
	}
}

// TestMatrixVectorsFollowTheMatricesOnResume: resumed with another selection of matrices, each
// matrix still projected finds its values at its new position, and a newly projected one starts
// from zero. (The resumed build's first step is skipped, a NaN batch, so the store holds the
// vectors as the build lined them up.)
func TestMatrixVectorsFollowTheMatricesOnResume(t *testing.T) {
	matrices := []string{"/layer_0/dense/weights", "/layer_1/dense/weights", "/layer_2/dense/weights", "/layer_3/dense/weights"}
	before := Subspace(optimizer.Adam().LearningRate(0.01).Done()).Rank(3).WarmUp(6).CheckEvery(4).Variables(matrices[:3]...).Done()
	r := deepRunOf(t, model.NewStore(), before, vectorWidths...)
	for range 14 {
		r.step(t)
	}
	report, err := before.Report(r.store)
	require.NoError(t, err)
	residual := map[string]float64{}
	for _, v := range report.Variables {
		residual[v.Path] = v.Residual
		require.Positive(t, v.Residual, v.Path)
	}
	// layer_0 leaves, layer_3 comes: the two that stay move from positions 1, 2 to 0, 1.
	after := Subspace(optimizer.Adam().LearningRate(0.01).Done()).Rank(3).WarmUp(6).CheckEvery(4).Variables(matrices[1:]...).Done()
	skipped := report.SkippedSteps
	resumed := deepRunOf(t, r.store, after, vectorWidths...)
	_, err = resumed.trainer.TrainStep(badBatch("nan"))
	require.NoError(t, err)
	report, err = after.Report(r.store)
	require.NoError(t, err)
	require.Equal(t, skipped+1, report.SkippedSteps, "the NaN step is skipped")
	got := map[string]VariableReport{}
	for _, v := range report.Variables {
		got[v.Path] = v
	}
	for _, m := range matrices[1:3] {
		require.Equal(t, residual[m], got[m].Residual, m)
		require.True(t, got[m].Valid, m)
	}
	require.Zero(t, got[matrices[3]].Residual)
	require.False(t, got[matrices[3]].Valid)
}
