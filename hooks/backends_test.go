package hooks

import (
	"strings"
	"testing"
	"time"

	"github.com/gomlx/compute"
	"github.com/gomlx/gomlx/ml/dataset"

	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/train"
	"github.com/gomlx/gomlx/ml/train/loss"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gradsub/gradsub/internal/backends"
	"github.com/gradsub/gradsub/projector"
	"github.com/stretchr/testify/require"
)

// TestEveryBackend trains with the projector on each backend present: the Go backend always,
// XLA on CPU and CUDA when a PJRT plugin for them is found (otherwise the subtest says what it
// needs and skips).
func TestEveryBackend(t *testing.T) {
	for _, config := range []string{"go", "xla:cpu", "xla:cuda"} {
		t.Run(config, func(t *testing.T) {
			backend, err := backends.New(config)
			if err != nil {
				if config == "go" {
					t.Fatal(err)
				}
				first, _, _ := strings.Cut(err.Error(), "\n")
				t.Skipf("needs a PJRT plugin for %s (point PJRT_PLUGIN_LIBRARY_PATH at it): %s", config, first)
			}
			store := model.NewStore()
			store.SetParam(model.ParamInitialSeed, int64(3))
			opt := Subspace(optimizer.Adam().LearningRate(0.01).Done()).Rank(3).WarmUp(5).CheckEvery(5).Done()
			trainer := train.NewTrainer(backend, store, mlp, loss.MeanSquaredError, opt, nil, nil)
			r := &run{store: store, trainer: trainer}
			first := r.step(t)
			var last float64
			for range 60 {
				last = r.step(t)
			}
			require.Less(t, last, 0.7*first, "%s: the loss must fall", config)
			report, err := opt.Report(store)
			require.NoError(t, err)
			require.GreaterOrEqual(t, report.SVDs, int64(1))
			for _, v := range report.Variables {
				require.True(t, v.Valid, "%s: %s has no basis", config, v.Path)
			}
			require.Equal(t, 1, opt.Builds())
		})
	}
}

// TestPlainProgramTrainsInEveryMode builds its backend as a GoMLX user's program does,
// compute.MustNew(), which in a program that links only the Go backend gives the Go backend with
// its default, parallel scheduling (not the project's ops_sequential); this test binary also
// links XLA, so $GOMLX_BACKEND says "go" with no options. It trains with train.NewLoop, in each mode, with
// ops large enough to split their work across the worker pool (a 1536×64 input). The gated
// learning this replaced hung there at the first step (an op inside an If waiting for a worker
// slot that idle executors held).
func TestPlainProgramTrainsInEveryMode(t *testing.T) {
	t.Setenv(backends.EnvVar, "go")
	backend := compute.MustNew()
	require.NotContains(t, backend.Description(), "sequential")
	for _, mode := range []Mode{Matrix, Temporal} {
		done := make(chan error, 1)
		var opt *Optimizer
		go func() {
			store := model.NewStore()
			opt = Subspace(optimizer.Adam().Done()).Mode(mode).Rank(4).WarmUp(6).CheckEvery(2).Done()
			trainer := train.NewTrainer(backend, store, mlp, loss.MeanSquaredError, opt, nil, nil)
			loop := train.NewLoop(trainer)
			x, y := toyProblem(1536, 64)
			ds, err := dataset.InMemoryFromData(backend, "toy", []any{x}, []any{y})
			if err != nil {
				done <- err
				return
			}
			_, err = loop.RunSteps(ds.BatchSize(1536, true).Infinite(true), 12)
			done <- err
		}()
		select {
		case err := <-done:
			require.NoError(t, err, "%s mode", mode)
			require.Equal(t, 1, opt.Builds(), "%s mode", mode)
		case <-time.After(2 * time.Minute):
			t.Fatalf("%s mode: training hung on the default Go backend", mode)
		}
	}
}

// TestStepGraphCapturesNothingWhereNeeded builds the training step, in both modes and with every
// drift rule on, the way it is built for backends whose closures cannot capture values (XLA): no
// op of a gated closure may use a value of another function, or XLA refuses the graph. It then
// trains a few steps through warm-up, checks and refreshes.
func TestStepGraphCapturesNothingWhereNeeded(t *testing.T) {
	for _, mode := range []Mode{Matrix, Temporal} {
		t.Run(mode.String(), func(t *testing.T) {
			cfg := Subspace(optimizer.Adam().LearningRate(0.01).Done()).Mode(mode).Rank(2).WarmUp(3).CheckEvery(2)
			if mode == Matrix {
				cfg = cfg.RankBounds(1, 4)
			}
			opt := cfg.Done()
			r := newRun(t, opt)
			first := r.step(t)
			g, _ := opt.StepGraph()
			require.Empty(t, projector.CapturedValues(g), "gated closures must take every value through their parameters")
			var last float64
			for range 12 {
				last = r.step(t)
			}
			require.Less(t, last, first)
			report, err := opt.Report(r.store)
			require.NoError(t, err)
			require.Positive(t, report.Checks)
		})
	}
}
