package hooks

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/stretchr/testify/require"
)

// goldenRuns are the configurations whose loss traces are pinned: a refactor that changes no
// behaviour (issue 15) must reproduce them.
var goldenRuns = map[string]func() *Optimizer{
	"matrix": func() *Optimizer {
		return Subspace(optimizer.Adam().LearningRate(0.01).Done()).Rank(3).WarmUp(4).CheckEvery(5).Done()
	},
	"temporal": func() *Optimizer {
		return Subspace(optimizer.Adam().LearningRate(0.01).Done()).Mode(Temporal).Rank(3).WarmUp(4).CheckEvery(5).Done()
	},
	"matrix-adaptive": func() *Optimizer {
		return Subspace(optimizer.Adam().LearningRate(0.01).Done()).Rank(3).RankBounds(2, 6).WarmUp(4).CheckEvery(5).Done()
	},
}

// TestGoldenLossTraces: 40 steps of each golden run give the losses recorded in
// testdata/golden_losses.json (to 1e-4 relative: CPUs with other SIMD widths round differently;
// a change of behaviour moves them far more). GOLDEN_UPDATE=1 rewrites the file — only for a
// change meant to alter training, said in its commit.
func TestGoldenLossTraces(t *testing.T) {
	const steps = 40
	path := filepath.Join("testdata", "golden_losses.json")
	got := map[string][]float64{}
	for name, newOpt := range goldenRuns {
		opt := newOpt()
		r := newRun(t, opt)
		mon := opt.NewMonitor(r.store)
		mon.Trainer = r.trainer // the rank rule acts through the monitor, on the trainer
		for range steps {
			got[name] = append(got[name], r.step(t))
			require.NoError(t, mon.Observe())
		}
		if name == "matrix-adaptive" {
			require.NotEmpty(t, mon.RankChanges, "the adaptive trace must include rank changes")
		}
	}
	if os.Getenv("GOLDEN_UPDATE") == "1" {
		data, err := json.MarshalIndent(got, "", "  ")
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(path, append(data, '\n'), 0o644))
		t.Logf("wrote %s", path)
		return
	}
	data, err := os.ReadFile(path)
	require.NoError(t, err, "no golden traces: run with GOLDEN_UPDATE=1 once")
	var want map[string][]float64
	require.NoError(t, json.Unmarshal(data, &want))
	for name := range goldenRuns {
		require.Len(t, want[name], steps, name)
		for i, w := range want[name] {
			g := got[name][i]
			require.LessOrEqual(t, math.Abs(g-w), 1e-4*math.Max(math.Abs(w), 1e-3), "%s: step %d loss %.7g, golden %.7g", name, i+1, g, w)
		}
	}
}
