package hooks

import (
	"math"
	"testing"

	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/train"
	"github.com/gomlx/gomlx/ml/train/loss"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/stretchr/testify/require"
)

// basisOrthonormalityError reads a [rows, k] basis variable (float32 or float64) and returns
// max |QᵀQ − I| over its non-zero columns, computed in float64.
func basisOrthonormalityError(t *testing.T, store *model.Store, path string) float64 {
	t.Helper()
	v := store.GetVariable(path)
	require.NotNil(t, v, path)
	value := v.MustValue()
	var q []float64
	switch v.DType() {
	case dtypes.Float32:
		for _, x := range tensors.MustCopyFlatData[float32](value) {
			q = append(q, float64(x))
		}
	case dtypes.Float64:
		q = tensors.MustCopyFlatData[float64](value)
	default:
		t.Fatalf("basis %s has dtype %s: bases are kept in float32 or float64", path, v.DType())
	}
	rows, k := v.Shape().Dim(0), v.Shape().Dim(1)
	var worst float64
	for a := range k {
		for b := range k {
			var dotAB, normA float64
			for i := range rows {
				dotAB += q[i*k+a] * q[i*k+b]
				normA += q[i*k+a] * q[i*k+a]
			}
			want := 0.0
			if a == b && normA > 0.5 { // a present column (projector.OrthonormalityError)
				want = 1
			}
			worst = math.Max(worst, math.Abs(dotAB-want))
		}
	}
	return worst
}

func TestEveryFloatDType(t *testing.T) {
	for _, dtype := range []dtypes.DType{dtypes.Float64, dtypes.BFloat16, dtypes.Float16} {
		for _, mode := range []Mode{Matrix, Temporal} {
			t.Run(dtype.String()+"/"+mode.String(), func(t *testing.T) {
				store := model.NewStore()
				store.SetParam(model.ParamInitialSeed, int64(7))
				// The model runs in dtype; the loss is taken in float32.
				modelFn := func(scope *model.Scope, x *Node) *Node {
					return ConvertDType(mlp(scope, ConvertDType(x, dtype)), dtypes.Float32)
				}
				opt := Subspace(optimizer.Adam().LearningRate(0.01).Done()).Mode(mode).Rank(3).WarmUp(4).CheckEvery(5).Done()
				trainer := train.NewTrainer(testBackend(t), store, modelFn, loss.MeanSquaredError, opt, nil, nil)
				var first, last float32
				for i := range 60 {
					x, y := toyProblem(64, 12)
					metrics, err := trainer.TrainStep(train.Batch{Inputs: []*tensors.Tensor{x}, Labels: []*tensors.Tensor{y}})
					require.NoError(t, err)
					last = metrics[0].Value().(float32)
					if i == 0 {
						first = last
					}
				}
				require.Less(t, last, first, "training must reduce the loss")
				require.False(t, math.IsNaN(float64(last)))
				require.Equal(t, dtype, store.GetVariable(firstLayer).DType(), "weights keep their dtype")
				basis := "/subspace/hidden/dense/weights_basis"
				wantState := dtypes.Float32
				if dtype == dtypes.Float64 {
					wantState = dtypes.Float64
				}
				require.Equal(t, wantState, store.GetVariable(basis).DType(), "bases and statistics in float32 for half precision")
				require.Less(t, basisOrthonormalityError(t, store, basis), 1e-5)
				report, err := opt.Report(store)
				require.NoError(t, err)
				require.Zero(t, report.SkippedSteps)
			})
		}
	}
}

// TestBasesStayOrthonormalOver10000Steps: with a drift check (and usually a refresh) every 5
// steps, the stored bases stay orthonormal in float32 to 1e-5 for 10,000 steps: matrix bases
// move (and are re-orthonormalised) at every one of them.
func TestBasesStayOrthonormalOver10000Steps(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 training steps per mode; skipped with -short")
	}
	for _, mode := range []Mode{Matrix, Temporal} {
		t.Run(mode.String(), func(t *testing.T) {
			// A plain low threshold (no drift margin): refresh at every check the rules allow.
			pol := DefaultPolicy()
			pol.CheckEvery, pol.ResidualThreshold, pol.DriftMargin = 5, 0.05, 0
			opt := Subspace(optimizer.Adam().LearningRate(0.003).Done()).Mode(mode).Rank(3).WarmUp(6).Policy(pol).Done()
			r := newRun(t, opt)
			const basis = "/subspace/hidden/dense/weights_basis"
			var worst float64
			for i := range 10_000 {
				r.step(t)
				if (i+1)%1000 == 0 {
					worst = math.Max(worst, basisOrthonormalityError(t, r.store, basis))
				}
			}
			report, err := opt.Report(r.store)
			require.NoError(t, err)
			t.Logf("%s: worst ‖QᵀQ−I‖ %.2g over %d bases learned", mode, worst, report.SVDs)
			if mode == Temporal { // a matrix basis moves at every step
				require.Greater(t, report.SVDs, int64(100), "the test must exercise many refreshes")
			}
			require.Less(t, worst, 1e-5)
			requireFinite(t, r.snapshot(t))
		})
	}
}
