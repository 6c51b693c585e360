package hooks

import (
	"path"
	"strings"
	"testing"

	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/stretchr/testify/require"
)

// TestStateSchemaCoversTheStore: every variable the projector keeps in its state scope is an
// entry of the schema (state.go), with the schema's dtype where it fixes one, in both modes with
// every rule on. A state variable written outside the schema fails here.
func TestStateSchemaCoversTheStore(t *testing.T) {
	everyRule := DefaultPolicy()
	everyRule.CheckEvery, everyRule.LossPatience, everyRule.CurvatureFactor, everyRule.FullUpdateEvery = 2, 2, 10, 1
	for name, opt := range map[string]*Optimizer{
		"matrix":   Subspace(optimizer.Adam().LearningRate(0.01).Done()).Rank(3).WarmUp(4).Policy(everyRule).RankBounds(2, 6).Done(),
		"temporal": Subspace(optimizer.Adam().LearningRate(0.01).Done()).Mode(Temporal).Rank(3).WarmUp(4).Policy(everyRule).Done(),
	} {
		t.Run(name, func(t *testing.T) {
			require.NoError(t, opt.Config().Validate())
			r := newRun(t, opt)
			for range 8 {
				r.step(t)
			}
			root := path.Join("/", StateScope)
			var projected []string
			for _, e := range opt.Plan() {
				if e.Route != RouteFull {
					projected = append(projected, e.Variable)
				}
			}
			require.NotEmpty(t, projected)
			seen := map[string]bool{}
			for v := range r.store.IterVariables() {
				if !strings.HasPrefix(v.Path(), root+"/") {
					continue
				}
				var entry *stateVar
				for i, s := range stateSchema {
					if v.Path() == s.of(root) {
						entry = &stateSchema[i]
					}
					for _, p := range projected {
						if v.Path() == s.ofVariable(root, p) {
							entry = &stateSchema[i]
						}
					}
				}
				require.NotNil(t, entry, "%s is in the state scope but not in the schema (state.go)", v.Path())
				if entry.dtype != 0 {
					require.Equal(t, entry.dtype, v.DType(), v.Path())
				}
				require.False(t, v.Trainable, v.Path())
				seen[entry.name] = true
			}
			for _, s := range []stateVar{svStep, svLossEMA, svLearnings, svBasis, svCoefficients, svResidual, svCurvature} {
				require.True(t, seen[s.name], "%s missing from the store", s.name)
			}
		})
	}
}
