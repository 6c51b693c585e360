package hooks

import (
	"testing"

	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/model/checkpoint"
	"github.com/stretchr/testify/require"
)

// TestPlanFollowsTheModelAfterResume: the plan, and the Report made from it, list the variables
// in the order the model reads them, on a fresh run and on every resume alike (a loaded store
// holds them in the checkpoint's load order, which differs from load to load).
func TestPlanFollowsTheModelAfterResume(t *testing.T) {
	paths := func(opt *Optimizer) []string {
		var out []string
		for _, e := range opt.Plan() {
			out = append(out, e.Variable)
		}
		return out
	}
	opt := vectorOptimizer()
	first := deepRunOf(t, model.NewStore(), opt, stackWidths...)
	for range 3 {
		first.step(t)
	}
	want := paths(opt)
	require.Equal(t, "/layer_0/dense/weights", want[0], "the model's order: %v", want)
	require.Equal(t, "/out/dense/biases", want[len(want)-1], "the model's order: %v", want)
	dir := t.TempDir()
	saver, err := checkpoint.Build(first.store).Dir(dir).Immediate().Done()
	require.NoError(t, err)
	require.NoError(t, saver.Save())
	for range 4 {
		store := model.NewStore()
		_, err := checkpoint.Build(store).Dir(dir).Immediate().Done()
		require.NoError(t, err)
		resumed := vectorOptimizer()
		r := deepRunOf(t, store, resumed, stackWidths...)
		r.step(t)
		require.Equal(t, want, paths(resumed), "the plan after a resume")
		report, err := resumed.Report(store)
		require.NoError(t, err)
		var reported []string
		for _, v := range report.Variables {
			reported = append(reported, v.Path)
		}
		require.Equal(t, projectedOf(want, resumed), reported, "the Report after a resume")
	}
}

// projectedOf keeps the paths opt projects, in order.
func projectedOf(paths []string, opt *Optimizer) []string {
	projected := map[string]bool{}
	for _, e := range opt.Plan() {
		projected[e.Variable] = e.Route != RouteFull
	}
	var out []string
	for _, p := range paths {
		if projected[p] {
			out = append(out, p)
		}
	}
	return out
}
