package hooks

import (
	"path"
	"strings"
	"testing"

	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gradsub/gradsub/hooks/internal/rules"
	"github.com/gradsub/gradsub/hooks/internal/step"
	"github.com/stretchr/testify/require"
)

// TestStateSchemaCoversTheStore: every variable the projector keeps in its state scope is an
// entry of the schema (internal/step/state.go), with the schema's dtype where it fixes one, in both modes with
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
				var entry *rules.StateVar
				for i, s := range step.Schema {
					if v.Path() == s.Of(root) || v.Path() == s.OfMatrices(root) || strings.HasPrefix(v.Path(), path.Join(root, "stacks", s.Name+"_")) || strings.HasPrefix(v.Path(), path.Join(root, "packs", s.Name+"_")) {
						entry = &step.Schema[i]
					}
					for _, p := range projected {
						if v.Path() == s.OfVariable(root, p) {
							entry = &step.Schema[i]
						}
					}
				}
				require.NotNil(t, entry, "%s is in the state scope but not in the schema (internal/step/state.go)", v.Path())
				if entry.DType != 0 {
					require.Equal(t, entry.DType, v.DType(), v.Path())
				}
				require.False(t, v.Trainable, v.Path())
				seen[entry.Name] = true
			}
			for _, s := range []rules.StateVar{step.SvStep, step.SvLossEMA, step.SvLearnings, step.SvBasis, step.SvCoefficients, step.SvResidual, step.SvCurvature} {
				require.True(t, seen[s.Name], "%s missing from the store", s.Name)
			}
		})
	}
}
