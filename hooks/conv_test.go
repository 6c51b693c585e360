package hooks

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	timage "github.com/gomlx/gomlx/core/tensors/images"
	"github.com/gomlx/gomlx/ml/layers"
	"github.com/gomlx/gomlx/ml/layers/activation"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/train"
	"github.com/gomlx/gomlx/ml/train/loss"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gradsub/gradsub/hooks/internal/direct"
	"github.com/gradsub/gradsub/projector"
	"github.com/stretchr/testify/require"
)

// convForm is one way GoMLX's models convolve: the input and kernel shapes and the builder's options.
type convForm struct {
	name          string
	x, kernel     []int
	build         func(*ConvolutionBuilder) *ConvolutionBuilder
	unsupportedBy string // the plan's reason, for forms the direct path leaves to the post-hoc path
}

var convForms = []convForm{
	{name: "2D same padding", x: []int{5, 8, 8, 3}, kernel: []int{3, 3, 3, 12},
		build: func(c *ConvolutionBuilder) *ConvolutionBuilder { return c.PadSame() }},
	{name: "2D stride 2, no padding", x: []int{4, 9, 9, 4}, kernel: []int{3, 3, 4, 10},
		build: func(c *ConvolutionBuilder) *ConvolutionBuilder { return c.Strides(2).NoPadding() }},
	{name: "2D dilation 2", x: []int{4, 9, 9, 2}, kernel: []int{3, 3, 2, 9},
		build: func(c *ConvolutionBuilder) *ConvolutionBuilder { return c.Dilations(2).PadSame() }},
	{name: "2D channels first", x: []int{4, 3, 7, 7}, kernel: []int{11, 3, 3, 3},
		build: func(c *ConvolutionBuilder) *ConvolutionBuilder {
			return c.ChannelsAxis(timage.ChannelsFirst).PadSame()
		}},
	{name: "1D", x: []int{6, 12, 5}, kernel: []int{3, 5, 13},
		build: func(c *ConvolutionBuilder) *ConvolutionBuilder { return c.PadSame() }},
	{name: "3D", x: []int{2, 4, 4, 4, 2}, kernel: []int{2, 2, 2, 2, 9},
		build: func(c *ConvolutionBuilder) *ConvolutionBuilder { return c.NoPadding() }},
	{name: "grouped", x: []int{3, 6, 6, 4}, kernel: []int{3, 3, 2, 8},
		build:         func(c *ConvolutionBuilder) *ConvolutionBuilder { return c.ChannelGroupCount(2).PadSame() },
		unsupportedBy: "grouped convolution"},
}

// randomTensor is a float64 tensor of standard normal entries; randomTensorOf, of any float dtype.
func randomTensor(rng *rand.Rand, dims ...int) *tensors.Tensor {
	return randomTensorOf[float64](rng, dims...)
}

func randomTensorOf[T float32 | float64](rng *rand.Rand, dims ...int) *tensors.Tensor {
	n := 1
	for _, d := range dims {
		n *= d
	}
	xs := make([]T, n)
	for i := range xs {
		xs[i] = T(rng.NormFloat64())
	}
	return tensors.FromFlatDataAndDimensions(xs, dims...)
}

func relativeError(t *testing.T, got, want *tensors.Tensor) float64 {
	t.Helper()
	a, b := tensors.MustCopyFlatData[float64](got), tensors.MustCopyFlatData[float64](want)
	require.Equal(t, len(b), len(a))
	var diff, norm float64
	for i := range a {
		diff += (a[i] - b[i]) * (a[i] - b[i])
		norm += b[i] * b[i]
	}
	return math.Sqrt(diff / norm)
}

// TestConvDirectCoefficients: for every supported convolution form and both sides, the direct
// coefficient equals ∂K₂·Q (or Qᵀ·∂K₂) of the full kernel gradient, and the tracking products
// equal those taken from the full gradient (projector.FullTrackingProducts), to 1e-5 relative.
// Grouped convolutions are left to the post-hoc path, with the reason.
func TestConvDirectCoefficients(t *testing.T) {
	backend := testBackend(t)
	for _, form := range convForms {
		for _, side := range []projector.Side{projector.Left, projector.Right} {
			t.Run(form.name+"/"+side.String(), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(1, uint64(len(form.name))))
				const rank = 3
				xT, kT := randomTensor(rng, form.x...), randomTensor(rng, form.kernel...)
				var why string
				outs, err := ExecOnceN(backend, func(x, kernel *Node) []*Node {
					y := form.build(Convolve(x, kernel)).Done()
					p, reason := direct.FindProduct(x.Graph(), kernel)
					if p == nil {
						why = reason
						return []*Node{y}
					}
					dy := Sin(Iota(x.Graph(), y.Shape(), 0)) // any fixed output gradient
					dy = Add(dy, Cos(Iota(x.Graph(), y.Shape(), y.Rank()-1)))
					full := p.FromW(Gradient(ReduceAllSum(Mul(y, dy)), kernel)[0]) // ∂K₂ [m, n]
					rows := p.N
					if side == projector.Left {
						rows = p.M
					}
					basis := ConstAsDType(x.Graph(), dtypes.Float64, projector.RandomOrthonormal(rows, rank, 7))
					other := p.M
					if side == projector.Left {
						other = p.N
					}
					omega := ConstAsDType(x.Graph(), dtypes.Float64, projector.Sketch(other, projector.SketchColumns(rank)))
					coef, _, tp := direct.ConvDirectStep(p.Conv, x, dy, basis, nil, omega, side, 1, MinTrackingRows)
					// Tracking from half the examples sums the coefficient over two parts.
					halfCoef, _, _ := direct.ConvDirectStep(p.Conv, x, dy, basis, nil, omega, side, 0.5, MinTrackingRows)
					want := projector.ProjectMatrix(full, basis, side)
					wantTP := projector.FullTrackingProducts(full, want, omega, side)
					// The lift maps the coefficient back into the kernel's own layout.
					roundTrip := Sub(p.FromW(p.ToW(full)), full)
					return []*Node{coef, want, tp.Power, wantTP.Power, tp.Sketch, wantTP.Sketch, ReduceAllMax(Abs(roundTrip)), halfCoef}
				}, xT, kT)
				require.NoError(t, err)
				if form.unsupportedBy != "" {
					require.Contains(t, why, form.unsupportedBy)
					return
				}
				require.Empty(t, why)
				require.Less(t, relativeError(t, outs[0], outs[1]), 1e-5, "coefficient")
				require.Less(t, relativeError(t, outs[7], outs[1]), 1e-5, "coefficient summed over the tracked examples and the rest")
				require.Less(t, relativeError(t, outs[2], outs[3]), 1e-5, "power product")
				require.Less(t, relativeError(t, outs[4], outs[5]), 1e-5, "sketch product")
				require.Zero(t, outs[6].Value().(float64), "kernel → matrix → kernel")
			})
		}
	}
}

// convNet is two 3×3 convolutions (16 and 32 channels) and a dense head on 8×8 images, as a
// GoMLX user writes it (layers.Convolution: kernels [3, 3, in, out]).
func convNet(scope *model.Scope, x *Node) *Node {
	h := x
	for i, ch := range []int{16, 32} {
		h = activation.Relu(layers.Convolution(scope.In("conv_%d", i), h).Filters(ch).KernelSize(3).PadSame().Done())
	}
	h = Reshape(h, h.Shape().Dim(0), -1)
	return layers.DenseWithBias(scope.In("output"), h, 1)
}

func convBatch(seed uint64) train.Batch {
	rng := rand.New(rand.NewPCG(seed, 3))
	xs, ys := make([]float32, 16*8*8), make([]float32, 16)
	for i := range xs {
		xs[i] = float32(rng.NormFloat64())
	}
	for i := range ys {
		for j := range 8 { // a target the convolutions can learn: the image's top-left mean
			ys[i] += xs[i*64+j] / 8
		}
	}
	return train.Batch{Inputs: []*tensors.Tensor{tensors.FromFlatDataAndDimensions(xs, 16, 8, 8, 1)},
		Labels: []*tensors.Tensor{tensors.FromFlatDataAndDimensions(ys, 16, 1)}}
}

// TestConvNetKernelsTakeTheDirectPath: with default options but the rank, a conv net's kernels
// are projected as [kh·kw·in, out] matrices on the direct path; the compiled step holds no
// convolution with a kernel's shape (the full kernel gradient), its gradient FLOPs fall, and
// it trains.
func TestConvNetKernelsTakeTheDirectPath(t *testing.T) {
	const rank = 4
	run := func(opt *Optimizer) (first, last float64) {
		store := model.NewStore()
		store.SetParam(model.ParamInitialSeed, int64(3))
		trainer := train.NewTrainer(testBackend(t), store, convNet, loss.MeanSquaredError, opt, nil, nil)
		for step := range 60 {
			metrics, err := trainer.TrainStep(convBatch(uint64(step % 4)))
			require.NoError(t, err)
			l := float64(metrics[0].Value().(float32))
			if step == 0 {
				first = l
			}
			last = l
		}
		return
	}
	stock := Subspace(optimizer.Adam().LearningRate(3e-3).Done()).Enabled(false).Done()
	stockFirst, stockLast := run(stock)
	opt := Subspace(optimizer.Adam().LearningRate(3e-3).Done()).Rank(rank).Done()
	first, last := run(opt)
	require.Equal(t, 1, opt.Builds())

	kernels := map[string][]int{"/conv_0/conv/weights": {3, 3, 1, 16}, "/conv_1/conv/weights": {3, 3, 16, 32}}
	for _, e := range opt.Plan() {
		dims, ok := kernels[e.Variable]
		if !ok {
			continue
		}
		require.Equal(t, RouteDirect, e.Route, opt.PlanString())
		require.Contains(t, e.Why, fmt.Sprintf("as a [%d×%d] matrix", dims[0]*dims[1]*dims[2], dims[3]), opt.PlanString())
		delete(kernels, e.Variable)
	}
	require.Empty(t, kernels, "kernels missing from the plan:\n%s", opt.PlanString())

	g, _ := opt.StepGraph()
	opt.mu.Lock()
	live := Live(g, opt.roots)
	opt.mu.Unlock()
	for _, n := range g.Nodes() {
		if live[n] && n.Type() == NodeTypeConvGeneral {
			for _, dims := range [][]int{{3, 3, 1, 16}, {3, 3, 16, 32}} {
				require.NotEqual(t, dims, n.Shape().Dimensions, "a live convolution builds a full kernel gradient: %s", n)
			}
		}
	}
	f, err := opt.StepFLOPs()
	require.NoError(t, err)
	sf, err := stock.StepFLOPs()
	require.NoError(t, err)
	require.Less(t, f.Gradient, sf.Gradient, "gradient FLOPs: subspace %d, stock %d", f.Gradient, sf.Gradient)
	require.Less(t, last, first/2, "the projected conv net trains (stock: %.4f → %.4f)", stockFirst, stockLast)
}

// TestPostHocViewsFollowUse: a weight the direct path cannot take is still seen as the matrix
// its use implies, not as [dimension 0, the rest]: a grouped convolution's kernel [3, 3, 2, 8]
// as [18×8], and an output projection [heads, head_dim, width] that two products share as
// [heads·head_dim, width] (it used to be a 4×1024 matrix). Both train on the post-hoc path.
func TestPostHocViewsFollowUse(t *testing.T) {
	modelFn := func(scope *model.Scope, x *Node) *Node {
		g := x.Graph()
		kernel := scope.In("grouped").VariableWithShape("kernel", shapes.Make(dtypes.Float32, 3, 3, 2, 8)).NodeValue(g)
		h := activation.Relu(Convolve(x, kernel).ChannelGroupCount(2).PadSame().Done()) // [B, 8, 8, 8]
		h = Reshape(h, h.Shape().Dim(0), 4, 16, 8)                                      // [B, heads, head_dim, 8]
		proj := scope.In("output").VariableWithShape("projection", shapes.Make(dtypes.Float32, 4, 16, 64)).NodeValue(g)
		a := DotGeneral(h, []int{1, 2}, []int{}, proj, []int{0, 1}, []int{})      // [B, 8, 64]
		b := DotGeneral(Neg(h), []int{1, 2}, []int{}, proj, []int{0, 1}, []int{}) // the weight's second use
		y := ReduceSum(Tanh(Add(a, MulScalar(b, 0.5))), 1)                        // [B, 64]
		return ReduceSum(y, 1)
	}
	// Named: the default selection would leave the projection out as an output head.
	opt := Subspace(optimizer.Adam().LearningRate(0.01).Done()).Rank(4).Variables("/grouped/kernel", "/output/projection").Done()
	store := model.NewStore()
	store.SetParam(model.ParamInitialSeed, int64(5))
	trainer := train.NewTrainer(testBackend(t), store, func(scope *model.Scope, x *Node) *Node {
		return Reshape(modelFn(scope, x), x.Shape().Dim(0), 1)
	}, loss.MeanSquaredError, opt, nil, nil)
	rng := rand.New(rand.NewPCG(1, 1))
	for range 8 {
		xs, ys := make([]float32, 8*8*8*4), make([]float32, 8)
		for i := range xs {
			xs[i] = float32(rng.NormFloat64())
		}
		_, err := trainer.TrainStep(train.Batch{Inputs: []*tensors.Tensor{tensors.FromFlatDataAndDimensions(xs, 8, 8, 8, 4)},
			Labels: []*tensors.Tensor{tensors.FromFlatDataAndDimensions(ys, 8, 1)}})
		require.NoError(t, err)
	}
	plan := opt.PlanString()
	want := map[string]string{
		"/grouped/kernel":    "full gradient projected, as a convolution kernel [18×8] (spatial·in × out): a grouped convolution",
		"/output/projection": "full gradient projected, as a [64×64] matrix (contracted axes × the rest): used by 2 ops",
	}
	for _, e := range opt.Plan() {
		if w, ok := want[e.Variable]; ok {
			require.Equal(t, RoutePostHoc, e.Route, plan)
			require.Contains(t, e.Why, w, plan)
			delete(want, e.Variable)
		}
	}
	require.Empty(t, want, plan)
	require.Less(t, basisOrthonormalityError(t, store, "/subspace/grouped/kernel_basis"), 1e-4)
	require.Less(t, basisOrthonormalityError(t, store, "/subspace/output/projection_basis"), 1e-4)
	r := &run{store: store}
	requireFinite(t, r.snapshot(t))
}

// wideConvNet is two 3×3 convolutions of 128 channels on 32 (kernels [288×128] and [1152×128] as
// matrices), global average pooling and a head: kernels the automatic rank's share would take
// at 32 directions, a quarter of their output side.
func wideConvNet(scope *model.Scope, inputs []*Node) []*Node {
	h := inputs[0]
	for i := range 2 {
		h = activation.Relu(layers.Convolution(scope.In("conv_%d", i), h).Filters(128).KernelSize(3).PadSame().Done())
	}
	return []*Node{layers.DenseWithBias(scope.In("output"), ReduceMean(h, 1, 2), 10)}
}

// TestAutomaticRankLeavesKernelsOut: without Rank, a convolution kernel trains as stock and the
// plan says why (a quarter of a 128-channel kernel's output side cost 1.9× stock's eval loss
// on internal/quality's WideConvNet, and a share that holds does not pay), although the share
// and the cost cap alone would project them; with Rank set, the same kernels are projected.
func TestAutomaticRankLeavesKernelsOut(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	batch := train.Batch{Inputs: []*tensors.Tensor{randomTensor(rng, 8, 8, 8, 32)}, Labels: []*tensors.Tensor{randomTensor(rng, 8, 10)}}
	plan := func(cfg *Config) *Optimizer {
		opt := cfg.Done()
		store := model.NewStore()
		trainer := train.NewTrainer(testBackend(t), store, wideConvNet, loss.MeanSquaredError, opt, nil, nil)
		_, err := trainer.TrainStep(batch)
		require.NoError(t, err)
		return opt
	}
	kernels := map[string][2]int{"/conv_0/conv/weights": {288, 128}, "/conv_1/conv/weights": {1152, 128}}
	require.Equal(t, 16, AutoRank(1152, 128, 8*8*8), "/conv_1/conv/weights: the share and the cost cap alone would project it")
	require.Equal(t, 32, PlainAutoRank(288, 128, 8*8*8), "/conv_0/conv/weights: without the complement, too")
	ranked := plan(Subspace(optimizer.Adam().Done()).Rank(32))
	for _, auto := range []*Optimizer{plan(Subspace(optimizer.Adam().Done())), plan(Subspace(optimizer.Adam().Done()).Complement(0))} {
		left := 0
		for _, e := range auto.Plan() {
			if _, ok := kernels[e.Variable]; ok {
				require.Equal(t, RouteFull, e.Route, auto.PlanString())
				// With the complement, conv_0's share does not pay at these rows: the cost cap says so.
				if e.Variable == "/conv_1/conv/weights" || auto.cfg.complement == 0 {
					require.Contains(t, e.Why, "a convolution kernel", auto.PlanString())
				}
				require.Contains(t, e.Why, "set Rank to project it", auto.PlanString())
				left++
			}
		}
		require.Equal(t, len(kernels), left, auto.PlanString())
		require.Contains(t, auto.PlanString(), "no variable projected", "the kernels were the only candidates (the head is left out)")
	}
	found := 0
	for _, e := range ranked.Plan() {
		if _, ok := kernels[e.Variable]; ok {
			require.Equal(t, RouteDirect, e.Route, ranked.PlanString())
			require.Equal(t, 32, e.Rank, ranked.PlanString())
			found++
		}
	}
	require.Equal(t, len(kernels), found, ranked.PlanString())
}
