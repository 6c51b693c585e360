package hooks

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/nn"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gradsub/gradsub/hooks/internal/direct"
	"github.com/gradsub/gradsub/projector"
	"github.com/stretchr/testify/require"
)

// TestMatrixUpdateLiesInSubspace: without the complement (Complement(0), the published method's
// step) every update of a projected weight lies in the span of the basis its step used, and the
// base optimizer keeps no full-size state for it, whatever the base optimizer.
func TestMatrixUpdateLiesInSubspace(t *testing.T) {
	const rank = 3
	for name, base := range baseOptimizers() {
		t.Run(name, func(t *testing.T) {
			opt := Subspace(base()).Rank(rank).WarmUp(2).CheckEvery(0).Complement(0).Done()
			r := newRun(t, opt)
			r.float64 = true // the check measures the projection, not float32 rounding
			for range 4 {
				r.step(t)
			}
			plan := opt.Plan()
			require.Equal(t, RouteDirect, plan[0].Route, opt.PlanString())
			require.Equal(t, projector.Left, plan[0].Side, "W [12, 16]: the smaller side is the input side")
			m, n := 12, 16
			for range 3 {
				before := r.value(t, firstLayer)
				q := r.value(t, "/subspace/hidden/dense/weights_basis") // [m, rank]: the basis this step uses
				r.step(t)
				after := r.value(t, firstLayer)
				deltaNorm, residNorm := outsideSpan(q, rank, m, n, func(i, j int) float64 { return after[i*n+j] - before[i*n+j] })
				require.Greater(t, deltaNorm, 0.0)
				require.LessOrEqual(t, math.Sqrt(residNorm), 1e-5*math.Sqrt(deltaNorm), "update leaves span(Q)")
			}
			// The base optimizer's state for the projected weight has the coefficient's shape.
			for v := range r.store.IterVariables() {
				if v.Trainable {
					continue
				}
				if v.Shape().Equal(shapes.Make(dtypes.Float64, m, n)) {
					t.Fatalf("full-size state variable %s %s: the matrix subspace must keep none", v.Path(), v.Shape())
				}
			}
			require.Equal(t, 1, opt.Builds())
		})
	}
}

// TestScaleSetsTheLiftedStepsLength checks Scale on the first Adam step, where every coordinate
// Adam normalises moves by the learning rate: unprojected, W [12, 16] moves lr·√(12·16); at rank
// 3 on its 12-row side the coefficient [3, 16] moves lr·√(3·16), which Q keeps (the default, GaLore's
// scale 1); Scale(0) multiplies it by √(12/3) back to the unprojected length; Scale(α) by α. The
// complement is off: its step comes on top (TestComplementStepsOutsideTheBasis).
func TestScaleSetsTheLiftedStepsLength(t *testing.T) {
	const rank, m, n, lr = 3, 12, 16, 0.01
	firstStep := func(opt optimizer.Interface) float64 {
		r := newRun(t, opt)
		r.float64 = true
		_, err := r.trainer.EvalStep(r.batch()) // creates and initialises the weights
		require.NoError(t, err)
		return r.nextStepLength(t, firstLayer)
	}
	adam := func() optimizer.Interface { return optimizer.Adam().LearningRate(lr).Done() }
	stock := firstStep(adam())
	require.InDelta(t, lr*math.Sqrt(m*n), stock, 1e-3*stock, "Adam's first step moves each coordinate by lr")
	scaled := map[float64]float64{}
	for _, scale := range []float64{1, 0, 2.5} {
		opt := Subspace(adam()).Rank(rank).Scale(scale).Complement(0).Done()
		scaled[scale] = firstStep(opt)
		if scale == 1 {
			require.NotContains(t, opt.PlanString(), "step ×", "the default scale is not shown")
		} else {
			require.Contains(t, opt.PlanString(), fmt.Sprintf("rank 3, step ×%.2f", opt.cfg.ScaleOf(m, rank)), "shown beside the rank")
		}
	}
	require.InDelta(t, math.Sqrt(float64(rank)/m)*stock, scaled[1], 1e-3*stock, "scale 1: √(r/d) of the unprojected step")
	require.InDelta(t, stock, scaled[0], 1e-3*stock, "Scale(0): the unprojected step's length")
	require.InDelta(t, 2.5*scaled[1], scaled[2.5], 1e-6*stock)

	// Temporal mode: the first projected step (after two full warm-up steps, the same in both
	// runs) is twice as long at Scale(2).
	thirdStep := func(scale float64) float64 {
		r := newRun(t, Subspace(adam()).Mode(Temporal).Rank(2).WarmUp(2).CheckEvery(0).Scale(scale).Done())
		r.float64 = true
		r.step(t)
		r.step(t)
		return r.nextStepLength(t, firstLayer)
	}
	one := thirdStep(1)
	require.Greater(t, one, 0.0)
	require.InDelta(t, 2*one, thirdStep(2), 1e-9*one)
}

// nextStepLength trains one step and returns how far it moved the variable at path (‖ΔW‖).
func (r *run) nextStepLength(t *testing.T, path string) float64 {
	t.Helper()
	before := r.value(t, path)
	r.step(t)
	after := r.value(t, path)
	var sum float64
	for i := range before {
		sum += (after[i] - before[i]) * (after[i] - before[i])
	}
	return math.Sqrt(sum)
}

// TestDirectPathBuildsNoWeightGradient inspects the compiled step: no live product computes
// xᵀ·∂y for the projected weight, and there is no control flow (If, While, Call) at all. Every
// step — warm-up, drift check, refresh, ordinary — runs this one graph (one build), so one walk
// covers them all. The only product of the weight's shape left is the lift [Q | Ω]·Δc, which
// contracts over the rank and the complement's directions.
func TestDirectPathBuildsNoWeightGradient(t *testing.T) {
	const rank = 3
	stock := Subspace(optimizer.Adam().Done()).Enabled(false).Done()
	newRun(t, stock).step(t)
	require.Equal(t, []int{64}, weightProducts(t, stock), "stock back-propagation builds ∂W = xᵀ·∂y over the batch of 64")

	// Two complement directions: the coefficient's product has 3 + 2 rows (padded to 8, not 12:
	// a coefficient as tall as W's side would have W's shape too).
	opt := Subspace(optimizer.Adam().Done()).Rank(rank).WarmUp(2).CheckEvery(3).Complement(2).Done()
	r := newRun(t, opt)
	for range 12 { // warm-up, then checks
		r.step(t)
	}
	report, err := opt.Report(r.store)
	require.NoError(t, err)
	require.Positive(t, report.Checks)
	require.Equal(t, 1, opt.Builds(), "one graph for every kind of step")
	require.Equal(t, RouteDirect, opt.Plan()[0].Route)
	require.Equal(t, []int{rank + 2}, weightProducts(t, opt), "only the lift (contracting over the rank and the complement) may have W's shape")

	f, err := opt.StepFLOPs()
	require.NoError(t, err)
	sf, err := stock.StepFLOPs()
	require.NoError(t, err)
	// Stock: ∂W₁ (2·64·12·16) + the output layer's ∂W₂ and ∂x (2·2·64·16). Direct: (x·[Q | Ω])ᵀ·∂y
	// is 2·64·12·5 + 2·5·64·16 (the basis's 3 columns and the complement's 2), no ∂x for the
	// first layer; the complement's directions are drawn outside Q (Qᵀ·N and Q·(Qᵀ·N), 2·2·12·3·2);
	// tracking adds ∂y·[Cᵀ | Ω] and xᵀ·(that)
	// (2·64·(16+12)·(3+s)), the sketch's projection on Q (2·2·12·3·s), a Newton–Schulz
	// orthonormalisation of [12, 3] (its Gram and final product, 2·2·12·3·3, and three 3×3
	// products per iteration after the first) and the rotation R = Q_nextᵀ·Q
	// (2·12·3·3), and the check that the stored basis is orthonormal, QᵀQ (2·12·3·3). Products
	// whose rows are the rank are padded to 4 rows (projector.ProductTile), and the sketch has
	// as many columns as make rank + s a multiple of 4 (projector.SketchColumns). On this toy
	// layer that is more than the direct path saves; on a 784×256 layer at rank 8 the direct
	// path with tracking is about a tenth of stock's weight gradient.
	s4 := projector.SketchColumns(rank)
	tileOf := func(rows int) int {
		return (rows + projector.ProductTile - 1) / projector.ProductTile * projector.ProductTile
	}
	tile, c := tileOf(rank), rank+2
	ns := projector.NewtonSchulzSteps(DefaultFastTrackingRate)
	require.Equal(t, int64(2*64*12*16+2*2*64*16), sf.Gradient)
	products := int64(2*64*12*c + 2*tileOf(c)*64*16 + 2*2*64*16 + 2*2*12*rank*2)
	tracking := int64(2*64*(16+12)*(rank+s4) + 2*2*12*rank*s4 + 2*2*12*rank*rank + 3*(ns-1)*2*rank*rank*rank + 2*2*12*rank*tile)
	require.Equal(t, products, f.Gradient-tracking, "gradient FLOPs: %d, of which tracking %d", f.Gradient, tracking)
	require.Zero(t, f.PerLearn, "nothing is gated")
}

// weightProducts lists the live products of the toy's first weight's shape ([12, 16] or its
// transpose) in opt's step graph, by the length they contract over, and fails on control flow.
func weightProducts(t *testing.T, opt *Optimizer) (contractions []int) {
	t.Helper()
	g, _ := opt.StepGraph()
	opt.mu.Lock()
	roots := opt.roots
	opt.mu.Unlock()
	live := Live(g, roots)
	consumed := map[*Node]bool{}
	for _, n := range g.Nodes() {
		if live[n] {
			for _, in := range n.Inputs() {
				consumed[in] = true
			}
		}
	}
	for _, n := range g.Nodes() {
		switch n.Type() {
		case NodeTypeIf, NodeTypeWhile, NodeTypeCall:
			t.Fatalf("the step graph holds control flow: %s", n)
		}
		if !live[n] {
			continue
		}
		switch n.Type() {
		case NodeTypeDotGeneral:
			// W's shape, or its transpose (GoMLX's decomposed VJP may build ∂Wᵀ).
			if dims := n.Shape().Dimensions; n.Rank() == 2 && (dims[0] == 12 && dims[1] == 16 || dims[0] == 16 && dims[1] == 12) {
				contractions = append(contractions, int(productFLOPs(n, consumed)/(2*12*16)))
			}
		case NodeTypeFusedDenseVJP:
			for _, split := range splitsOf(n, consumed) {
				if split.Shape().Equal(n.Inputs()[1].Shape()) && n.Inputs()[1].Shape().Dim(0) == 12 {
					contractions = append(contractions, n.Inputs()[0].Shape().Dim(0))
				}
			}
		}
	}
	return
}

// productCase is a kind of product GoMLX's layers build with a weight.
type productCase struct {
	name  string
	x, w  *tensors.Tensor
	bias  bool
	build func(x, w, bias *Node) *Node
	kind  string
	// decomposed is the kind where the backend has no fused Dense (XLA, or GOMLX_FUSION=0):
	// GoMLX builds the layer from primitives, a rank-3 weight reshaped to a matrix first.
	decomposed string
	wIsLHS     bool
}

// productCases are the products TestDirectCoefficientsForEachProduct checks, on random inputs
// ([b, m] or [b, s, m]) and weights (m×n, or m×h×k with n = h·k).
func productCases(randTensor func(dims ...int) *tensors.Tensor, b, s, m, h, k int) []productCase {
	n := h * k
	return []productCase{
		{name: "dense", x: randTensor(b, m), w: randTensor(m, n), bias: true, kind: "FusedDense", decomposed: "DotGeneral",
			build: func(x, w, bias *Node) *Node { return nn.Dense(x, w, bias, compute.DenseLayoutInputOutputs) }},
		{name: "dense, batch axes, rank-3 weight", x: randTensor(b, s, m), w: randTensor(m, h, k), kind: "FusedDense", decomposed: "Reshape→DotGeneral",
			build: func(x, w, _ *Node) *Node { return nn.Dense(x, w, nil, compute.DenseLayoutInputOutputs) }},
		{name: "dense, outputs-input layout", x: randTensor(b, s, m), w: randTensor(n, m), bias: true, kind: "FusedDense", decomposed: "DotGeneral",
			build: func(x, w, bias *Node) *Node { return nn.Dense(x, w, bias, compute.DenseLayoutOutputsInput) }},
		{name: "matmul", x: randTensor(b, m), w: randTensor(m, n), kind: "DotGeneral",
			build: func(x, w, _ *Node) *Node { return MatMul(x, w) }},
		{name: "einsum, batch axes", x: randTensor(b, s, m), w: randTensor(m, h, k), kind: "DotGeneral",
			build: func(x, w, _ *Node) *Node { return Einsum("bsd,dhk->bshk", x, w) }},
		{name: "einsum, weight on the left", x: randTensor(b, s, m), w: randTensor(m, n), kind: "DotGeneral", wIsLHS: true,
			build: func(x, w, _ *Node) *Node { return Einsum("dn,bsd->nbs", w, x) }},
		{name: "dot general, contracting the weight's last axis", x: randTensor(b, m), w: randTensor(n, m), kind: "DotGeneral",
			build: func(x, w, _ *Node) *Node { return Dot(x, w).General([]int{1}, nil, []int{1}, nil) }},
	}
}

// TestDirectCoefficientsForEachProduct: for each kind of product GoMLX's layers build, the
// projected gradient computed from ∂y equals the projection of the full gradient ∂W.
func TestDirectCoefficientsForEachProduct(t *testing.T) {
	const b, s, m, h, k, r = 5, 3, 6, 2, 4, 2
	n := h * k
	rng := rand.New(rand.NewPCG(4, 4))
	randTensor := func(dims ...int) *tensors.Tensor { return randomTensorOf[float32](rng, dims...) }
	cases := productCases(randTensor, b, s, m, h, k)
	for _, tc := range cases {
		for _, side := range []projector.Side{projector.Left, projector.Right} {
			t.Run(tc.name+"/"+side.String(), func(t *testing.T) {
				basisRows := m
				if side == projector.Right {
					basisRows = n
				}
				var kind string
				fused := false
				outs, err := ExecOnceN(testBackend(t), func(x, w, bias, q *Node) []*Node {
					if !tc.bias {
						bias = nil
					}
					y := tc.build(x, w, bias)
					for _, node := range x.Graph().Nodes() {
						fused = fused || node.Type() == NodeTypeFusedDense
					}
					weights := ConstAsDType(x.Graph(), dtypes.Float32, 1.0)
					loss := ReduceAllSum(Mul(Square(y), weights))
					p, why := direct.FindProduct(x.Graph(), w)
					require.NotNil(t, p, why)
					kind = p.Kind
					require.Equal(t, m, p.M)
					require.Equal(t, n, p.N)
					grads := Gradient(loss, w, p.Output)
					q = projector.Orthonormalize(q, 1e-7)
					direct := projector.DirectCoefficients(p.XRows(p.X), p.DyRows(grads[1]), q, side)
					full := projector.ProjectMatrix(p.FromW(grads[0]), q, side)
					relErr := Div(Sqrt(ReduceAllSum(Square(Sub(direct, full)))), Sqrt(ReduceAllSum(Square(full))))
					roundTrip := ReduceAllMax(Abs(Sub(p.ToW(p.FromW(w)), w)))
					return []*Node{relErr, roundTrip}
				}, tc.x, tc.w, randTensor(n), randTensor(basisRows, r))
				require.NoError(t, err)
				want := tc.kind
				if tc.decomposed != "" && !fused {
					want = tc.decomposed
				}
				require.Equal(t, want, kind)
				require.Less(t, outs[0].Value().(float32), float32(1e-5), "direct coefficients ≠ projected full gradient")
				require.Zero(t, outs[1].Value().(float32), "fromW/toW must be inverses")
			})
		}
	}
}

func TestMatrixTrainsAndRefreshes(t *testing.T) {
	opt := Subspace(optimizer.Adam().LearningRate(0.01).Done()).
		Rank(4).WarmUp(5).CheckEvery(5).ResidualThreshold(0.3).Complement(0).Done()
	r := newRun(t, opt)
	mon := opt.NewMonitor(r.store)
	first, last := r.stepsObserved(t, mon, 151)
	require.Less(t, last, 0.5*first, "training must reduce the loss (first %g, last %g)", first, last)
	report, err := opt.Report(r.store)
	require.NoError(t, err)
	require.Equal(t, int64((151-5)/5), report.Checks)
	require.Equal(t, 1+report.Refreshes, report.SVDs, "a burst of fast tracking from the first step, then one per refresh")
	require.Equal(t, report.SVDs, int64(len(mon.Events)))
	require.Equal(t, 1, opt.Builds())
	require.Len(t, report.Variables, 1, "the [16, 1] output layer stays full at rank 4")
	require.Equal(t, RouteDirect, report.Variables[0].Kind)
	// The share of the gradient's energy the basis holds (from the residual sketch): more than
	// the rank/rows a random basis of the 12-row side would hold.
	require.Greater(t, report.Variables[0].ExplainedVariance, 4.0/12)
	t.Log(report)
}
