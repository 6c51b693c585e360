package hooks

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"

	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/layers"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/model/initializer"
	"github.com/gomlx/gomlx/ml/train"
	"github.com/gomlx/gomlx/ml/train/loss"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/stretchr/testify/require"
)

// teacher is a regression problem whose gradient subspace provably moves: targets are
// y = x·T + noise with T of rank 2 whose row space (a plane of R^n) is replaced, at switchStep,
// by an orthogonal plane. A student y = x·W trained on it has ∂W ∝ (W − T): its row space is
// T's plane before the switch and spans both planes after it, so a basis learned before the
// switch cannot reach the new target.
type teacher struct {
	m, n, batch int
	switchStep  int
	before      []float64 // [m, n]
	after       []float64
	rng         *rand.Rand
	step        int
}

const teacherNoise = 0.1

func newTeacher(switchStep int) *teacher {
	const m, n = 24, 16
	rng := rand.New(rand.NewPCG(3, 5))
	// An orthonormal set of 4 directions of R^n: the first plane (e₁,e₂) and the second (e₃,e₄),
	// in a random rotation.
	dirs := make([][]float64, 4)
	for i := range dirs {
		v := make([]float64, n)
		for j := range v {
			v[j] = rng.NormFloat64()
		}
		for _, d := range dirs[:i] {
			var dot float64
			for j := range v {
				dot += v[j] * d[j]
			}
			for j := range v {
				v[j] -= dot * d[j]
			}
		}
		var norm float64
		for _, x := range v {
			norm += x * x
		}
		for j := range v {
			v[j] /= math.Sqrt(norm)
		}
		dirs[i] = v
	}
	target := func(d0, d1 []float64) []float64 {
		t := make([]float64, m*n)
		for i := range m {
			a0, a1 := 2*rng.NormFloat64(), 2*rng.NormFloat64()
			for j := range n {
				t[i*n+j] = a0*d0[j] + a1*d1[j]
			}
		}
		return t
	}
	return &teacher{m: m, n: n, batch: 64, switchStep: switchStep,
		before: target(dirs[0], dirs[1]), after: target(dirs[2], dirs[3]), rng: rand.New(rand.NewPCG(11, 13))}
}

// next returns the next batch (each run of the test replays the same sequence from a fresh
// teacher).
func (tc *teacher) next() train.Batch {
	tc.step++
	target := tc.before
	if tc.step > tc.switchStep {
		target = tc.after
	}
	x := make([]float32, tc.batch*tc.m)
	y := make([]float32, tc.batch*tc.n)
	for b := range tc.batch {
		for i := range tc.m {
			x[b*tc.m+i] = float32(tc.rng.NormFloat64())
		}
		for j := range tc.n {
			var s float64
			for i := range tc.m {
				s += float64(x[b*tc.m+i]) * target[i*tc.n+j]
			}
			y[b*tc.n+j] = float32(s/math.Sqrt(float64(tc.m)) + teacherNoise*tc.rng.NormFloat64())
		}
	}
	return train.Batch{
		Inputs: []*tensors.Tensor{tensors.FromFlatDataAndDimensions(x, tc.batch, tc.m)},
		Labels: []*tensors.Tensor{tensors.FromFlatDataAndDimensions(y, tc.batch, tc.n)},
	}
}

// student starts from zero weights, so that W − T, and the gradient, has exactly the teacher's
// low rank: a random start adds a full-rank part that any low-rank method removes slowly,
// and that is not what this problem tests.
func student(scope *model.Scope, x *Node) *Node {
	return DivScalar(layers.Dense(scope.In("student").WithInitializer(initializer.Zero), x, false, 16), math.Sqrt(24))
}

// trainTeacher trains the student for steps and returns the mean loss of the last window steps;
// a subspace optimizer's Monitor logs to logs.
func trainTeacher(t *testing.T, opt optimizer.Interface, steps, switchStep, window int, logs *[]string) (float64, *model.Store) {
	t.Helper()
	tc := newTeacher(switchStep)
	store := model.NewStore()
	store.SetParam(model.ParamInitialSeed, int64(1))
	trainer := train.NewTrainer(testBackend(t), store, student, loss.MeanSquaredError, opt, nil, nil)
	var mon *Monitor
	if sub, ok := opt.(*Optimizer); ok && logs != nil {
		mon = sub.NewMonitor(store)
		mon.Logf = func(format string, args ...any) { *logs = append(*logs, fmt.Sprintf(format, args...)) }
	}
	var tail float64
	for i := range steps {
		metrics, err := trainer.TrainStep(tc.next())
		require.NoError(t, err)
		if mon != nil {
			require.NoError(t, mon.Observe())
		}
		if i >= steps-window {
			tail += float64(metrics[0].Value().(float32))
		}
	}
	return tail / float64(window), store
}

// TestControllerFollowsAMovingSubspace is the drift controller's evidence: when the target moves
// to directions the learned basis does not hold, training with the controller off stalls; with
// the default policy it recovers to within 10% of the stock optimizer, with few refreshes. The
// bases alone are judged (Complement(0)); the complement, on by default, reaches the moved
// directions even with a frozen basis and no controller.
func TestControllerFollowsAMovingSubspace(t *testing.T) {
	const steps, switchStep, window = 1600, 400, 100
	base := func() optimizer.Interface { return optimizer.Adam().LearningRate(0.02).Done() }
	subspace := func() *Config { return Subspace(base()).Rank(4).Complement(0) }

	stock, _ := trainTeacher(t, base(), steps, switchStep, window, nil)
	// Off: no checks, and bases that stop moving after warm-up (tracking rate 0).
	offOpt := subspace().CheckEvery(0).TrackingRate(0, DefaultFastTrackingRate).Done()
	off, _ := trainTeacher(t, offOpt, steps, switchStep, window, nil)
	onOpt := subspace().Done()
	var logs []string
	on, store := trainTeacher(t, onOpt, steps, switchStep, window, &logs)
	report, err := onOpt.Report(store)
	require.NoError(t, err)
	t.Logf("final loss: stock %.5f, controller off %.4f, on %.5f (noise floor %.4f); %s",
		stock, off, on, teacherNoise*teacherNoise, report)

	require.Less(t, stock, 2*teacherNoise*teacherNoise, "the stock optimizer must fit the moved target")
	require.Greater(t, off, 10*stock, "with a frozen basis and no controller, training stalls")
	frozenOpt := Subspace(base()).Rank(4).CheckEvery(0).TrackingRate(0, DefaultFastTrackingRate).Done()
	frozen, _ := trainTeacher(t, frozenOpt, steps, switchStep, window, nil)
	t.Logf("a frozen basis with the complement: %.5f", frozen)
	require.LessOrEqual(t, frozen, 1.2*stock, "the complement's random directions reach what a frozen basis misses")
	// Within 10% of stock at the noise floor: a basis tracking at the default rate also follows
	// some of the noise of single batches (at TrackingRate 0.3 this run lands within 2%; the
	// quality suite's three models train better at 1: docs/tracking.md).
	require.LessOrEqual(t, on, 1.10*stock, "with the controller on, within 10%% of stock")
	require.Positive(t, report.Refreshes)
	require.LessOrEqual(t, report.Refreshes, report.Checks/3, "few refreshes: the controller is not refreshing blindly")
	require.Equal(t, 1, onOpt.Builds(), "refreshes do not recompile")
	// Each action is logged with the signal and the threshold that caused it.
	refreshLines, fullLines, firstAfter := refreshLog(t, logs, switchStep)
	require.Equal(t, int(report.Refreshes), refreshLines)
	require.Zero(t, fullLines, "matrix mode takes no full updates: its basis tracks")
	require.Positive(t, firstAfter, "a refresh after the move")
	// The basis follows the move by tracking alone; the controller adds a burst of fast tracking
	// within a few checks.
	require.LessOrEqual(t, firstAfter, int64(switchStep+4*DefaultCheckEvery), "the controller reacts within four checks")
}

// refreshLog reads a Monitor's log: each refresh must name its signal and threshold; it counts
// the refreshes and the full updates, and gives the first refresh after step switchStep (-1:
// none).
func refreshLog(t *testing.T, logs []string, switchStep int64) (refreshLines, fullLines int, firstAfter int64) {
	t.Helper()
	firstAfter = -1
	for _, line := range logs {
		if strings.Contains(line, "basis learned (") && !strings.Contains(line, "warm-up") {
			switch {
			case strings.Contains(line, "(residual above threshold)"):
				require.Regexp(t, `residual 0\.\d+ > 0\.5, grown by more than 0\.15`, line)
			case strings.Contains(line, "(curvature jumped)"):
				require.Regexp(t, `curvature jumped to \d+\.\d× its smoothed magnitude \(factor 10\)`, line)
			case strings.Contains(line, "(smoothed loss stopped falling)"):
				require.Regexp(t, `not falling for 4 checks \(patience 4\)`, line)
			default:
				t.Fatalf("a refresh without its signal: %s", line)
			}
			refreshLines++
			var step int64
			_, err := fmt.Sscanf(line, "subspace: step %d:", &step)
			require.NoError(t, err)
			if step > switchStep && firstAfter < 0 {
				firstAfter = step
			}
		}
		if strings.Contains(line, "full update of /student/dense/weights") {
			fullLines++
		}
	}
	return refreshLines, fullLines, firstAfter
}

// TestCurvatureSignal: on the quadratic loss a/2·‖W‖² the gradient is a·W, so the curvature
// along any step is exactly a; the signal measured from the coefficients must say so. With a
// basis frozen after warm-up the measurement is exact; with a tracking basis the previous
// step's coefficients are rotated into the new basis, which leaves out the part of the step
// outside it: the signal is then an estimate, of the right order for the rule's jumps of
// CurvatureFactor (10×): here within a factor of 2.
func TestCurvatureSignal(t *testing.T) {
	const a = 3.0
	quadratic := func(scope *model.Scope, x *Node) *Node {
		w := scope.VariableWithShape("w", shapes.Make(dtypes.Float32, 8, 6)).NodeValue(x.Graph())
		return MulScalar(ReduceAllSum(Square(w)), a/2)
	}
	lossIsPrediction := func(_, predictions []*Node) *Node { return predictions[0] }
	for _, slow := range []float64{0, DefaultTrackingRate} {
		// Checks on (the signal is built only for its rule) but none within the run: no refresh.
		opt := Subspace(optimizer.Adam().LearningRate(0.01).Done()).Rank(2).CheckEvery(1000).
			TrackingRate(slow, DefaultFastTrackingRate).Done()
		store := model.NewStore()
		store.SetParam(model.ParamInitialSeed, int64(2))
		trainer := train.NewTrainer(testBackend(t), store, quadratic, lossIsPrediction, opt, nil, nil)
		steps := 100 // the smoothed magnitude forgets the warm-up's fast-moving steps
		if slow > 0 {
			steps = 30
		}
		for range steps {
			_, err := trainer.TrainStep(train.Batch{
				Inputs: []*tensors.Tensor{tensors.FromValue([]float32{0})},
				Labels: []*tensors.Tensor{tensors.FromValue([]float32{0})}})
			require.NoError(t, err)
		}
		report, err := opt.Report(store)
		require.NoError(t, err)
		tol := 1e-3
		if slow > 0 {
			tol = 0.5
		}
		require.InDelta(t, a, report.Curvature, tol*a, "tracking rate %g: curvature along the last step", slow)
		require.InDelta(t, a, report.CurvatureEMA, tol*a, "tracking rate %g: its smoothed magnitude", slow)
		require.Equal(t, RoutePostHoc, opt.Plan()[0].Route)
	}
}

// splitBySpan is the length of the update after − before ([rows, cols]) inside span(Q) (q:
// [rows, rank], row-major) and outside it, column by column.
func splitBySpan(q, before, after []float64, rows, cols, rank int) (inside, outside float64) {
	for j := range cols {
		c := make([]float64, rank)
		for i := range rows {
			for k := range rank {
				c[k] += q[i*rank+k] * (after[i*cols+j] - before[i*cols+j])
			}
		}
		for i := range rows {
			var in float64
			for k := range rank {
				in += q[i*rank+k] * c[k]
			}
			d := after[i*cols+j] - before[i*cols+j]
			inside += in * in
			outside += (d - in) * (d - in)
		}
	}
	return math.Sqrt(inside), math.Sqrt(outside)
}

// TestFullUpdateRotation (temporal mode): at a check that is its turn, a projected variable's
// update leaves its subspace by at most the length of the projected step; at other steps it
// stays inside. Matrix mode ignores the rule: its update always lies in the step's basis.
func TestFullUpdateRotation(t *testing.T) {
	const rank, p = 3, 12 * 16 // the first layer, flattened
	for _, mode := range []Mode{Temporal, Matrix} {
		pol := Policy{CheckEvery: 2, ResidualThreshold: 1, FullUpdateEvery: 1}
		opt := Subspace(optimizer.Adam().LearningRate(0.01).Done()).Mode(mode).Rank(rank).WarmUp(4).Policy(pol).Complement(0).Done()
		r := newRun(t, opt)
		r.float64 = true
		for range 4 {
			r.step(t) // warm-up
		}
		for step := 5; step <= 12; step++ {
			before := r.value(t, firstLayer)
			q := r.value(t, "/subspace/hidden/dense/weights_basis") // the basis this step uses
			r.step(t)
			after := r.value(t, firstLayer)
			// Q is [p, rank] (temporal) or [12, rank] (matrix, Q on W's left side: ΔW's columns
			// in span(Q)).
			rows, cols := p, 1
			if mode == Matrix {
				rows, cols = 12, 16
			}
			inside, outside := splitBySpan(q, before, after, rows, cols, rank)
			// Temporal mode projects both layers; checks (every 2 steps) give them turns in path
			// order, the output layer first: the first layer's turns are at every other check.
			if mode == Temporal && (step-4)%4 == 0 {
				require.Greater(t, outside, 1e-3*inside, "step %d: the full update must leave the subspace", step)
				require.LessOrEqual(t, outside, inside*(1+1e-6), "step %d: no longer than the projected step", step)
				// The report names the variable whose turn it was, as the graph decided it.
				report, err := opt.Report(r.store)
				require.NoError(t, err)
				require.Equal(t, firstLayer, report.LastFullUpdate, "step %d", step)
			} else {
				require.LessOrEqual(t, outside, 1e-9+1e-6*inside, "%s mode, step %d: the update stays in the subspace", mode, step)
			}
		}
		report, err := opt.Report(r.store)
		require.NoError(t, err)
		if mode == Temporal {
			require.Equal(t, int64(4), report.FullUpdates)
		} else {
			require.Zero(t, report.FullUpdates)
		}
	}
}
