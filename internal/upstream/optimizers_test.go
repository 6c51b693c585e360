package upstream

import (
	"slices"
	"testing"

	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/train"
	"github.com/gomlx/gomlx/ml/train/loss"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gradsub/gradsub/internal/backends"
	"github.com/stretchr/testify/require"
)

// TestOptimizerStateNaming pins how GoMLX v0.28.16's optimizers name a variable's state, the
// contract IsStateOf, NormalisesSteps and LearningRate read: after one step, Adam's and AdamW's
// moments and RMSProp's second moment are found for the weight (and only they), and SGD keeps
// none; the learning rate is where LearningRate looks. When this test fails, an upgrade renamed
// or moved them, and the projector would stop rotating its coefficients' moments with the
// basis: adapt IsStateOf and hooks' baseAdapter.
func TestOptimizerStateNaming(t *testing.T) {
	backend, err := backends.New("go")
	require.NoError(t, err)
	for _, c := range []struct {
		name       string
		opt        optimizer.Interface
		state      []string
		normalises bool
	}{
		{"adam", optimizer.Adam().Done(), []string{"weights_1st_moment", "weights_2nd_moment"}, true},
		{"adamw", optimizer.Adam().WeightDecay(0.01).Done(), []string{"weights_1st_moment", "weights_2nd_moment"}, true},
		{"rmsprop", optimizer.RMSProp().Done(), []string{"weights_2nd_moment"}, true},
		{"sgd", optimizer.StochasticGradientDescent().Done(), nil, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			store := model.NewStore()
			trainer := train.NewTrainer(backend, store, linear, loss.MeanSquaredError, c.opt, nil, nil)
			_, err := trainer.TrainStep(batchOf(0))
			require.NoError(t, err)
			weights := store.GetVariable("/dense/dense/weights")
			require.NotNil(t, weights)
			var state []*model.Variable
			var names []string
			for sv := range store.IterVariables() {
				if IsStateOf(sv, weights) {
					state = append(state, sv)
					names = append(names, sv.Name())
				}
			}
			slices.Sort(names)
			require.Equal(t, c.state, names, "the weight's state, found by name, scope and shape")
			require.Equal(t, c.normalises, NormalisesSteps(state))
			require.True(t, UpdatesElementwise(c.opt), "GoMLX's own: its coefficients may be stacked")
			require.NotNil(t, store.Scope("/").At(optimizer.Scope).GetVariable(optimizer.ParamLearningRate), "the learning rate where LearningRate looks")
		})
	}
}

// foreignOptimizer is an optimizer from outside GoMLX (here Adam, wrapped): it might normalise
// or orthogonalise a variable as a whole.
type foreignOptimizer struct{ optimizer.Interface }

func TestOnlyGoMLXsOptimizersUpdateElementwise(t *testing.T) {
	require.False(t, UpdatesElementwise(foreignOptimizer{optimizer.Adam().Done()}))
	require.False(t, UpdatesElementwise(&foreignOptimizer{optimizer.Adam().Done()}))
	require.False(t, UpdatesElementwise(nil))
}
