package hooks

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/gomlx/compute"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/layers"
	"github.com/gomlx/gomlx/ml/layers/activation"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/train"
	"github.com/gomlx/gomlx/ml/train/loss"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gomlx/gomlx/ui/commandline"
	"github.com/gradsub/gradsub/internal/backends"
	"github.com/stretchr/testify/require"
)

// testBackend is the backend the tests share (backends.Shared): $GOMLX_BACKEND, or the Go backend.
func testBackend(t testing.TB) compute.Backend {
	b, err := backends.Shared()
	require.NoError(t, err)
	return b
}

// toyProblem is a fixed regression batch: y = tanh(x·a) with a little noise.
func toyProblem(n, features int) (x, y *tensors.Tensor) {
	x64, y64 := toyProblem64(n, features)
	xs, ys := tensors.MustCopyFlatData[float64](x64), tensors.MustCopyFlatData[float64](y64)
	x32, y32 := make([]float32, len(xs)), make([]float32, len(ys))
	for i, v := range xs {
		x32[i] = float32(v)
	}
	for i, v := range ys {
		y32[i] = float32(v)
	}
	return tensors.FromFlatDataAndDimensions(x32, n, features), tensors.FromFlatDataAndDimensions(y32, n, 1)
}

func toyProblem64(n, features int) (x, y *tensors.Tensor) {
	rng := rand.New(rand.NewPCG(42, 0))
	xs := make([]float64, n*features)
	ys := make([]float64, n)
	a := make([]float64, features)
	for i := range a {
		a[i] = rng.NormFloat64()
	}
	for i := range n {
		var s float64
		for j := range features {
			v := rng.NormFloat64()
			xs[i*features+j] = v
			s += v * a[j]
		}
		ys[i] = math.Tanh(s) + 0.05*rng.NormFloat64()
	}
	return tensors.FromFlatDataAndDimensions(xs, n, features), tensors.FromFlatDataAndDimensions(ys, n, 1)
}

func mlp(scope *model.Scope, x *Node) *Node {
	h := layers.DenseWithBias(scope.In("hidden"), x, 16)
	h = activation.Apply(activation.TypeTanh, h)
	return layers.DenseWithBias(scope.In("output"), h, 1)
}

const firstLayer = "/hidden/dense/weights"

type run struct {
	store   *model.Store
	trainer *train.Trainer
	float64 bool // train in float64 (for tests whose tolerance is below float32 rounding)
}

func newRun(t *testing.T, opt optimizer.Interface) *run {
	store := model.NewStore()
	store.SetParam(model.ParamInitialSeed, int64(7))
	return &run{store: store, trainer: train.NewTrainer(testBackend(t), store, mlp, loss.MeanSquaredError, opt, nil, nil)}
}

func (r *run) step(t *testing.T) float64 {
	t.Helper()
	metrics, err := r.trainer.TrainStep(r.batch())
	require.NoError(t, err)
	if r.float64 {
		return metrics[0].Value().(float64)
	}
	return float64(metrics[0].Value().(float32))
}

// stepsObserved trains n steps, observing the monitor after each; it returns the first and last
// losses.
func (r *run) stepsObserved(t *testing.T, mon *Monitor, n int) (first, last float64) {
	t.Helper()
	for i := range n {
		last = r.step(t)
		require.NoError(t, mon.Observe())
		if i == 0 {
			first = last
		}
	}
	return first, last
}

// batch returns fresh tensors each step: the trainer takes ownership of (and frees) a batch.
func (r *run) batch() train.Batch {
	x, y := toyProblem(64, 12)
	if r.float64 {
		x, y = toyProblem64(64, 12)
	}
	return train.Batch{Inputs: []*tensors.Tensor{x}, Labels: []*tensors.Tensor{y}}
}

func (r *run) value(t *testing.T, path string) []float64 {
	t.Helper()
	v := r.store.GetVariable(path)
	require.NotNil(t, v, "variable %s", path)
	value := v.MustValue()
	if r.float64 {
		return tensors.MustCopyFlatData[float64](value)
	}
	var out []float64
	for _, x := range tensors.MustCopyFlatData[float32](value) {
		out = append(out, float64(x))
	}
	return out
}

func baseOptimizers() map[string]func() optimizer.Interface {
	return map[string]func() optimizer.Interface{
		"sgd": func() optimizer.Interface {
			return optimizer.StochasticGradientDescent().WithDecay(false).WithLearningRate(0.05).Done()
		},
		"adam":    func() optimizer.Interface { return optimizer.Adam().LearningRate(0.01).Done() },
		"adamw":   func() optimizer.Interface { return optimizer.Adam().LearningRate(0.01).WeightDecay(0.01).Done() },
		"rmsprop": func() optimizer.Interface { return optimizer.RMSProp().LearningRate(0.01).Done() },
	}
}

func TestDisabledIsExactlyTheBaseOptimizer(t *testing.T) {
	for name, base := range baseOptimizers() {
		t.Run(name, func(t *testing.T) {
			stock := newRun(t, base())
			wrapped := newRun(t, Subspace(base()).Enabled(false).Done())
			for range 15 {
				require.Equal(t, stock.step(t), wrapped.step(t))
			}
			require.Equal(t, stock.value(t, firstLayer), wrapped.value(t, firstLayer))
		})
	}
}

// TestDisabledSaysSo: switched off, by Enabled(false) or by `-set subspace_enabled=false` (how a
// user compares with stock), the plan, the Report and the progress-bar column say "disabled"
// instead of showing an empty plan and zeroed counters, which read as a broken projector.
func TestDisabledSaysSo(t *testing.T) {
	viaOption := Subspace(optimizer.Adam().Done()).Rank(4).Enabled(false).Done()
	store := model.NewStore()
	store.SetParams(DefaultParams())
	viaParam := Subspace(optimizer.Adam().Done()).Rank(4).FromScope(store.RootScope()).Done()
	_, err := commandline.ParseSettings(store, "subspace_enabled=false")
	require.NoError(t, err)
	for name, r := range map[string]struct {
		opt *Optimizer
		run *run
	}{
		"option": {viaOption, newRun(t, viaOption)},
		"param":  {viaParam, &run{store: store, trainer: train.NewTrainer(testBackend(t), store, mlp, loss.MeanSquaredError, viaParam, nil, nil)}},
	} {
		t.Run(name, func(t *testing.T) {
			mon := r.opt.NewMonitor(r.run.store)
			r.run.step(t)
			require.NoError(t, mon.Observe())
			report, err := r.opt.Report(r.run.store)
			require.NoError(t, err)
			require.True(t, report.Disabled)
			require.Equal(t, "subspace: disabled (Enabled(false), or subspace_enabled=false): the base optimizer trains alone\n", report.String())
			require.Contains(t, r.opt.PlanString(), "subspace: disabled")
			_, column := mon.ProgressMetric()()
			require.Equal(t, "disabled", column)
		})
	}
}

func TestTemporalUpdateLiesInSubspace(t *testing.T) {
	const rank, warmUp = 3, 6
	for name, base := range baseOptimizers() {
		t.Run(name, func(t *testing.T) {
			// In float64, so that the check measures the projection, not float32 rounding of the
			// stored weights (≈ 4e-7 absolute here, above 1e-5·‖Δw‖).
			opt := Subspace(base()).Mode(Temporal).Rank(rank).WarmUp(warmUp).CheckEvery(0).Done()
			r := newRun(t, opt)
			r.float64 = true
			for range warmUp + 2 {
				r.step(t)
			}
			// After warm-up: every step's update of the projected weight lies in span(V).
			basisPath := "/subspace/hidden/dense/weights_basis"
			for range 5 {
				before := r.value(t, firstLayer)
				r.step(t)
				after := r.value(t, firstLayer)
				v := r.value(t, basisPath)
				p := len(before)
				delta := make([]float64, p)
				var deltaNorm float64
				for i := range p {
					delta[i] = after[i] - before[i]
					deltaNorm += delta[i] * delta[i]
				}
				deltaNorm = math.Sqrt(deltaNorm)
				require.Greater(t, deltaNorm, 0.0, "the projected weight must move")
				// residual = Δ − V(VᵀΔ)
				coef := make([]float64, rank)
				for i := range p {
					for j := range rank {
						coef[j] += v[i*rank+j] * delta[i]
					}
				}
				var residNorm float64
				for i := range p {
					r := delta[i]
					for j := range rank {
						r -= v[i*rank+j] * coef[j]
					}
					residNorm += r * r
				}
				require.LessOrEqual(t, math.Sqrt(residNorm), 1e-5*deltaNorm, "update leaves the subspace")
			}
			// Biases (not selected) still train with full updates, and nothing recompiled.
			require.Equal(t, 1, opt.Builds())
			report, err := opt.Report(r.store)
			require.NoError(t, err)
			require.Len(t, report.Variables, 2, "both weight matrices are projected by default")
			require.Equal(t, int64(1), report.SVDs)
			for _, v := range report.Variables {
				require.True(t, v.Valid)
				require.Equal(t, rank, v.Rank)
				require.Greater(t, v.ExplainedVariance, 0.5)
			}
		})
	}
}

func TestTemporalTrainsAndRefreshes(t *testing.T) {
	opt := Subspace(optimizer.Adam().LearningRate(0.01).Done()).Mode(Temporal).
		Rank(4).WarmUp(8).CheckEvery(5).ResidualThreshold(0.3).Done()
	r := newRun(t, opt)
	mon := opt.NewMonitor(r.store)
	var logged []string
	mon.Logf = func(format string, args ...any) { logged = append(logged, format) }
	first, last := r.stepsObserved(t, mon, 151)
	require.Less(t, last, 0.5*first, "training must reduce the loss (first %g, last %g)", first, last)
	report, err := opt.Report(r.store)
	require.NoError(t, err)
	require.Equal(t, int64(151), report.Steps)
	require.Equal(t, int64((151-8)/5), report.Checks, "a check every 5 steps after warm-up")
	require.Equal(t, report.SVDs, int64(len(mon.Events)), "the monitor saw every SVD")
	require.Equal(t, CauseWarmUp, mon.Events[0].Cause)
	require.Equal(t, int64(8), mon.Events[0].Step)
	require.Equal(t, report.SVDs, 1+report.Refreshes)
	// Each refresh has at least one cause; one check can meet several rules.
	require.LessOrEqual(t, report.Refreshes, report.RefreshesResidual+report.RefreshesLoss+report.RefreshesCurvature)
	require.Positive(t, report.Refreshes, "a 0.3 residual threshold on a rank-4 subspace must trigger refreshes")
	var events, fullUpdates int
	for _, format := range logged {
		switch {
		case format == "subspace: %s":
			events++
		case strings.Contains(format, "full update"):
			fullUpdates++
		}
	}
	require.Equal(t, len(mon.Events), events, "one line per basis learned")
	require.Equal(t, int(report.FullUpdates), fullUpdates, "one line per full update")
	require.Len(t, logged, events+fullUpdates)
	require.Equal(t, 1, opt.Builds(), "refreshes must not recompile the step graph")
	t.Log(report)
}
