package hooks

import (
	"math"
	"testing"

	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/ml/layers"
	"github.com/gomlx/gomlx/ml/layers/activation"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/train"
	"github.com/gomlx/gomlx/ml/train/loss"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/stretchr/testify/require"
)

// withEmptyLayer is the toy MLP with a dense layer of zero outputs beside its hidden layer: a
// [12, 0] weight, which stock Adam trains (there is nothing to update).
func withEmptyLayer(scope *model.Scope, x *Node) *Node {
	h := layers.DenseWithBias(scope.In("hidden"), x, 16)
	empty := layers.DenseWithBias(scope.In("empty"), x, 0) // [batch, 0]
	h = activation.Apply(activation.TypeTanh, Concatenate([]*Node{h, empty}, -1))
	return layers.DenseWithBias(scope.In("output"), h, 1)
}

// TestZeroSizeWeightIsLeftOut: a weight with a zero-size dimension has nothing to project. Under
// the default selection, the one option, and named with Variables, the plan leaves it out and
// says why (it used to stop the first step with an integer divide by zero), and training goes on.
func TestZeroSizeWeightIsLeftOut(t *testing.T) {
	const empty = "/empty/dense/weights"
	for name, cfg := range map[string]*Config{
		"default selection": Subspace(optimizer.Adam().Done()).Rank(3),
		"the one option":    Subspace(optimizer.Adam().Done()),
		"named":             Subspace(optimizer.Adam().Done()).Rank(3).Variables(firstLayer, empty),
		"temporal":          Subspace(optimizer.Adam().Done()).Mode(Temporal).Rank(3),
	} {
		t.Run(name, func(t *testing.T) {
			opt := cfg.Done()
			store := model.NewStore()
			r := &run{store: store, trainer: train.NewTrainer(testBackend(t), store, withEmptyLayer, loss.MeanSquaredError, opt, nil, nil)}
			var last float64
			for range 5 {
				last = r.step(t)
			}
			require.False(t, math.IsNaN(last))
			var found bool
			for _, e := range opt.Plan() {
				if e.Variable == empty {
					found = true
					require.Equal(t, RouteFull, e.Route)
					require.Contains(t, e.Why, "no elements", opt.PlanString())
				}
			}
			require.True(t, found, opt.PlanString())
		})
	}
}
