package hooks

import (
	"math"
	"regexp"
	"testing"

	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/layers/regularizer"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/train"
	"github.com/gomlx/gomlx/ml/train/loss"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/stretchr/testify/require"
)

// TestRegularizedWeightTakesTheDirectPath: a weight that GoMLX's L2 regularizer reads (the
// `l2_regularization` param, read by layers.Dense and layers.Convolution) keeps the direct path,
// and its update equals the post-hoc projection of its full gradient, loss plus regularizer (the
// trainer gives full gradients under AccumulateGradients): the regularizer's gradient is
// projected on its own and added to the coefficients, with the complement's. Float64, SGD
// (whose step is linear in the gradient, so the comparison is strict), the first step (both
// start from the same basis), on a dense layer and on a convolution kernel.
func TestRegularizedWeightTakesTheDirectPath(t *testing.T) {
	const l2 = 0.3                 // large, so that leaving its gradient out would fail the comparison
	images := func() train.Batch { // convBatch in float64
		b := convBatch(4)
		return train.Batch{Inputs: []*tensors.Tensor{toFloat64(b.Inputs[0])}, Labels: []*tensors.Tensor{toFloat64(b.Labels[0])}}
	}
	dense := func() train.Batch {
		x, y := toyProblem64(64, 12)
		return train.Batch{Inputs: []*tensors.Tensor{x}, Labels: []*tensors.Tensor{y}}
	}
	for _, tc := range []struct {
		name, path string
		fn         func(scope *model.Scope, x *Node) *Node
		batch      func() train.Batch
	}{
		{"dense", firstLayer, mlp, dense},
		{"convolution", "/conv_1/conv/weights", convNet, images},
	} {
		t.Run(tc.name, func(t *testing.T) {
			direct, e := firstUpdate(t, tc.fn, tc.batch, tc.path, false, l2)
			require.Equal(t, RouteDirect, e.Route, e.Why)
			require.Contains(t, e.Why, "its regularizer's gradient (through Mul, no batch) projected on its own")
			postHoc, e := firstUpdate(t, tc.fn, tc.batch, tc.path, true, l2)
			require.Equal(t, RoutePostHoc, e.Route, e.Why)
			unregularized, _ := firstUpdate(t, tc.fn, tc.batch, tc.path, false, 0)
			var norm, diff, regPart float64
			for i := range direct {
				norm += postHoc[i] * postHoc[i]
				diff += (direct[i] - postHoc[i]) * (direct[i] - postHoc[i])
				regPart += (unregularized[i] - postHoc[i]) * (unregularized[i] - postHoc[i])
			}
			require.Greater(t, regPart, 1e-4*norm, "the regularizer's part of the update is not negligible")
			require.LessOrEqual(t, math.Sqrt(diff), 1e-9*math.Sqrt(norm), "direct = post-hoc projection of loss + regularizer gradients")
		})
	}
}

// firstUpdate is the change of the variable at path in its first update under SGD at rank 3
// with 4 complement directions (the plan's entry for it with it): one step, or two of the same
// batch accumulated (the post-hoc path), with the L2 regularizer l2 (0: none).
func firstUpdate(t *testing.T, fn func(scope *model.Scope, x *Node) *Node, batch func() train.Batch, path string, accumulate bool, l2 float64) ([]float64, PlanEntry) {
	t.Helper()
	opt := Subspace(optimizer.StochasticGradientDescent().WithDecay(false).WithLearningRate(0.1).Done()).
		Rank(3).Complement(4).Matching(regexp.QuoteMeta(path) + "$").Done()
	store := model.NewStore()
	store.SetParam(model.ParamInitialSeed, int64(7))
	if l2 > 0 {
		store.SetParam(regularizer.ParamL2, l2)
	}
	trainer := train.NewTrainer(testBackend(t), store, fn, loss.MeanSquaredError, opt, nil, nil)
	if accumulate {
		require.NoError(t, trainer.AccumulateGradients(2))
	}
	_, err := trainer.EvalStep(batch()) // creates and initialises the weights
	require.NoError(t, err)
	value := func() []float64 { return tensors.MustCopyFlatData[float64](store.GetVariable(path).MustValue()) }
	before := value()
	for range map[bool]int{false: 1, true: 2}[accumulate] { // the same batch twice: its gradient
		_, err := trainer.TrainStep(batch())
		require.NoError(t, err)
	}
	after := value()
	for i := range after {
		after[i] -= before[i]
	}
	for _, e := range opt.Plan() {
		if e.Variable == path {
			return after, e
		}
	}
	t.Fatalf("%s not in the plan", path)
	return nil, PlanEntry{}
}

// toFloat64 converts a float32 tensor to float64.
func toFloat64(x *tensors.Tensor) *tensors.Tensor {
	data := tensors.MustCopyFlatData[float32](x)
	out := make([]float64, len(data))
	for i, v := range data {
		out[i] = float64(v)
	}
	return tensors.FromFlatDataAndDimensions(out, x.Shape().Dimensions...)
}

// TestMatchingOverLayersOfSeveralWidths: a pattern that names layers of several widths (cifar's
// CNN, kernels of 16 and 64 output channels) projects those the rank fits; a narrower one keeps
// full updates, and the plan says why (it used to stop the first step). It is an error only when
// no matched variable takes the rank. Matching also forces what the default selection leaves
// out: a normalization gain.
func TestMatchingOverLayersOfSeveralWidths(t *testing.T) {
	cnn := gomlxLayerModels()[1]
	require.Equal(t, "CNN with layer norm", cnn.name)
	adam := func() optimizer.Interface { return optimizer.Adam().Done() }
	for _, tc := range []struct {
		rank   int
		conv1  string
		routes [2]Route
	}{
		{32, "too small for the rank: rank 32 exceeds the right side of the 27×16 weight (16)", [2]Route{RouteFull, RouteDirect}},
		{16, "too small for the rank: rank 16 is the whole right side of the 27×16 weight: a basis would not shrink it", [2]Route{RouteFull, RouteDirect}},
		{8, "ConvGeneral", [2]Route{RouteDirect, RouteDirect}},
	} {
		opt := Subspace(adam()).Rank(tc.rank).Matching("conv./conv/weights$").Done()
		trainLayersModel(t, cnn, opt, 3)
		plan := map[string]PlanEntry{}
		for _, e := range opt.Plan() {
			plan[e.Variable] = e
		}
		require.Equal(t, tc.routes[0], plan["/conv1/conv/weights"].Route, opt.PlanString())
		require.Contains(t, plan["/conv1/conv/weights"].Why, tc.conv1)
		require.Equal(t, tc.routes[1], plan["/conv2/conv/weights"].Route, opt.PlanString())
		require.Equal(t, tc.rank, plan["/conv2/conv/weights"].Rank)
	}
	// Rank 64 fits neither (16 channels; 64 is the whole of the other's side).
	store := model.NewStore()
	trainer := train.NewTrainer(testBackend(t), store, cnn.fn, loss.MeanSquaredError, Subspace(adam()).Rank(64).Matching("conv./conv/weights$").Done(), nil, nil)
	_, err := trainer.TrainStep(cnn.batch())
	require.ErrorContains(t, err, "no selected variable takes Rank(64): variable /conv1/conv/weights")
	require.ErrorContains(t, err, "lower the rank, or select wider variables")

	// Named, a layer norm's [8 64] gain is projected (after back-propagation: a Mul reads it).
	opt := Subspace(adam()).Rank(4).Matching("norm2/layer_normalization/gain$").Done()
	trainLayersModel(t, cnn, opt, 3)
	for _, e := range opt.Plan() {
		if e.Variable == "/norm2/layer_normalization/gain" {
			require.Equal(t, RoutePostHoc, e.Route, opt.PlanString())
		} else {
			require.Equal(t, RouteFull, e.Route, opt.PlanString())
		}
	}
}

// TestAutomaticRankCountsTheRegularizer: the one option's cost cap counts the projection of a
// regularizer's gradient: at batch 256 the 256×256 layer's projector would cost 0.84 of its ∂W
// with it (0.65 without), above AutoRankWorkShare, and it is left out; at 512 it pays (above).
func TestAutomaticRankCountsTheRegularizer(t *testing.T) {
	dense := gomlxLayerModels()[0]
	require.Equal(t, "dense with L1 and L2", dense.name)
	dense.batch = floatBatch(1, 256, 64)
	opt := Subspace(optimizer.Adam().Done()).Done()
	trainLayersModel(t, dense, opt, 1)
	for _, e := range opt.Plan() {
		if e.Variable == "/hidden1/dense/weights" {
			require.Equal(t, RouteFull, e.Route, opt.PlanString())
			require.Contains(t, e.Why, "too small to pay: at 256 rows per step, the automatic rank (16), with its regularizer's gradient projected, would cost the projector more than 0.7 of ∂W")
		}
	}
	dense.params = nil // without the regularizer it pays
	opt = Subspace(optimizer.Adam().Done()).Done()
	trainLayersModel(t, dense, opt, 1)
	for _, e := range opt.Plan() {
		if e.Variable == "/hidden1/dense/weights" {
			require.Equal(t, RouteDirect, e.Route, opt.PlanString())
		}
	}
}
