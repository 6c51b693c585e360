package projector

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/stretchr/testify/require"
	"gonum.org/v1/gonum/mat"
)

// TestStackedTrackingEqualsOneByOne: bases of one shape tracked as a stack give what each gives
// alone (the optimizer batches them to save ops), and DirectStep's tracking from the leading rows
// is the power product of those rows' gradient, with the coefficient of the whole batch.
func TestStackedTrackingEqualsOneByOne(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	const b, m, n, r, k = 24, 10, 7, 3, 9
	randMat := func(rows, cols int) *mat.Dense { return gaussianDense(rng, rows, cols) }
	x1, dy1, x2, dy2 := randMat(b, m), randMat(b, n), randMat(b, m), randMat(b, n)
	q1, q2 := denseOf(RandomOrthonormal(m, r, 1)), denseOf(RandomOrthonormal(m, r, 2))
	omega := toFloat32(denseOf(Sketch(n, DefaultSketchColumns)))
	outs, err := ExecOnceN(testBackend(t), func(in []*Node) []*Node {
		x1, dy1, x2, dy2, q1, q2, omega := in[0], in[1], in[2], in[3], in[4], in[5], in[6]
		rate := Scalar(x1.Graph(), x1.DType(), 2)
		c1, p1 := DirectStep(x1, dy1, q1, Transpose(omega, 0, 1), Left, k)
		_, p2 := DirectStep(x2, dy2, q2, Transpose(omega, 0, 1), Left, k)
		alone := []*Node{TrackBasis(q1, p1.Power, rate, 4), TrackBasis(q2, p2.Power, rate, 4)}
		together := TrackBasis(Stack([]*Node{q1, q2}, 0), Stack([]*Node{p1.Power, p2.Power}, 0), rate, 4)
		resid := SketchResidual(Stack([]*Node{q1, q2}, 0), Stack([]*Node{p1.Sketch, p2.Sketch}, 0))
		// The leading k rows' gradient and its power product (up to scale).
		head := TransposedTimes(Slice(x1, AxisRange(0, k)), Slice(dy1, AxisRange(0, k)))
		want := DotProduct(head, TransposedTimes(head, q1))
		scale := Div(ReduceAllMax(Abs(want)), ReduceAllMax(Abs(p1.Power)))
		full := TransposedTimes(x1, dy1)
		return []*Node{
			ReduceAllMax(Abs(Sub(Squeeze(Slice(together, AxisElem(0)), 0), alone[0]))),
			ReduceAllMax(Abs(Sub(Squeeze(Slice(together, AxisElem(1)), 0), alone[1]))),
			Abs(Sub(Reshape(Slice(resid, AxisElem(1))), SketchResidual(q2, p2.Sketch))),
			RelativeLength(Sub(Mul(p1.Power, scale), want), want),
			RelativeLength(Sub(c1, ProjectMatrix(full, q1, Left)), c1),
		}
	}, []*tensors.Tensor{toFloat32(x1), toFloat32(dy1), toFloat32(x2), toFloat32(dy2), toFloat32(q1), toFloat32(q2), omega})
	require.NoError(t, err)
	for i, o := range outs {
		require.Less(t, o.Value().(float32), float32(1e-5), "check %d", i)
	}
}

// A relative residual is a share of a length: a sketch wholly outside the basis gives 1, and
// float32 rounding of the two lengths must not report more (the Report and the rank policy read
// it as a fraction).
func TestResidualsOfSketchesOutsideTheBasisAreAtMostOne(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	cases, m, r, s := 256, 40, 3, 8
	qs := make([]float32, 0, cases*m*r)
	sketches := make([]float32, 0, cases*m*s)
	for c := range cases {
		q := denseOf(RandomOrthonormal(m, r, uint64(c+1)))
		g := gaussianDense(rng, m, s)
		// The part of g outside span(q), in float64: (I − q·qᵀ)·g.
		var qtg, inside, outside mat.Dense
		qtg.Mul(q.T(), g)
		inside.Mul(q, &qtg)
		outside.Sub(g, &inside)
		qs = append(qs, tensors.MustCopyFlatData[float32](toFloat32(q))...)
		sketches = append(sketches, tensors.MustCopyFlatData[float32](toFloat32(&outside))...)
	}
	outs, err := ExecOnceN(testBackend(t), func(q, sketch *Node) []*Node {
		return []*Node{SketchResidual(q, sketch), ReduceAllMax(SketchResidual(q, sketch)),
			RelativeResidual(Squeeze(Slice(q, AxisElem(0)), 0), Squeeze(Slice(sketch, AxisElem(0)), 0))}
	}, tensors.FromFlatDataAndDimensions(qs, cases, m, r), tensors.FromFlatDataAndDimensions(sketches, cases, m, s))
	require.NoError(t, err)
	largest := outs[1].Value().(float32)
	require.LessOrEqual(t, largest, float32(1), "a residual above 1")
	require.InDelta(t, 1, largest, 1e-5, "a sketch outside the basis is all residual")
	require.LessOrEqual(t, outs[2].Value().(float32), float32(1))
}

// TestSliceAlongIsSlice: the gather that takes the tracked rows returns exactly Slice's entries,
// along the leading axis and an inner one, and leaves a whole axis as it is.
func TestSliceAlongIsSlice(t *testing.T) {
	values := make([]float32, 5*4*3*2)
	for i := range values {
		values[i] = float32(i) * 0.5
	}
	x := tensors.FromFlatDataAndDimensions(values, 5, 4, 3, 2)
	for _, c := range []struct{ axis, from, to int }{{0, 0, 2}, {0, 3, 5}, {1, 1, 3}, {2, 0, 1}, {3, 1, 2}, {0, 0, 5}} {
		outs, err := ExecOnceN(testBackend(t), func(x *Node) []*Node {
			specs := []SliceAxisSpec{AxisRange(), AxisRange(), AxisRange(), AxisRange()}
			specs[c.axis] = AxisRange(c.from, c.to)
			return []*Node{SliceAlong(x, c.axis, c.from, c.to), Slice(x, specs...)}
		}, x)
		require.NoError(t, err)
		require.Equal(t, outs[1].Shape().Dimensions, outs[0].Shape().Dimensions, "axis %d [%d, %d)", c.axis, c.from, c.to)
		require.Equal(t, outs[1].Value(), outs[0].Value(), "axis %d [%d, %d)", c.axis, c.from, c.to)
	}
	_, err := ExecOnceN(testBackend(t), func(x *Node) []*Node { return []*Node{SliceAlong(x, 1, 2, 6)} }, x)
	require.ErrorContains(t, err, "not a non-empty range of axis 1")
}

// TestNewtonSchulzIsThePolarFactor: for matrices whose singular values lie in [lower, 1] (the
// worst the fast tracking rate makes), alone and stacked, NewtonSchulz returns the polar factor
// U·Vᵀ of X = U·diag(σ)·Vᵀ, computed here by gonum's SVD in float64, to float32 rounding.
func TestNewtonSchulzIsThePolarFactor(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	const rows, r = 40, 6
	lower := 1 / (1 + 4.0)
	var xs, polars []*mat.Dense
	for i := range 2 {
		u := denseOf(RandomOrthonormal(rows, r, uint64(10+i)))
		v := denseOf(RandomOrthonormal(r, r, uint64(20+i)))
		sigma := mat.NewDiagDense(r, nil)
		for j := range r {
			sigma.SetDiag(j, lower+(1-lower)*rng.Float64())
		}
		sigma.SetDiag(0, lower) // the interval's ends
		sigma.SetDiag(1, 1)
		var x, polar mat.Dense
		x.Product(u, sigma, v.T())
		polar.Mul(u, v.T())
		xs, polars = append(xs, &x), append(polars, &polar)
	}
	outs, err := ExecOnceN(testBackend(t), func(in []*Node) []*Node {
		alone := NewtonSchulz(in[0], lower)
		stack := NewtonSchulz(Stack([]*Node{in[0], in[1]}, 0), lower)
		return []*Node{
			ReduceAllMax(Abs(Sub(alone, in[2]))),
			ReduceAllMax(Abs(Sub(Squeeze(Slice(stack, AxisElem(0)), 0), in[2]))),
			ReduceAllMax(Abs(Sub(Squeeze(Slice(stack, AxisElem(1)), 0), in[3]))),
		}
	}, []*tensors.Tensor{toFloat32(xs[0]), toFloat32(xs[1]), toFloat32(polars[0]), toFloat32(polars[1])})
	require.NoError(t, err)
	for i, o := range outs {
		require.Less(t, o.Value().(float32), float32(2e-6), "matrix %d differs from its polar factor", i)
	}
}

// TestTrackBasisKeepsTheBasisOfANonFinitePowerProduct: in a stack, a matrix whose power product
// holds a NaN or an infinity keeps its basis exactly, and the others move as they would alone.
func TestTrackBasisKeepsTheBasisOfANonFinitePowerProduct(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	const rows, r = 12, 3
	q := []*mat.Dense{denseOf(RandomOrthonormal(rows, r, 1)), denseOf(RandomOrthonormal(rows, r, 2)), denseOf(RandomOrthonormal(rows, r, 3))}
	p := []*mat.Dense{gaussianDense(rng, rows, r), gaussianDense(rng, rows, r), gaussianDense(rng, rows, r)}
	p[1].Set(4, 2, math.Inf(-1))
	p[2].Set(0, 1, math.NaN())
	outs, err := ExecOnceN(testBackend(t), func(in []*Node) []*Node {
		rate := Scalar(in[0].Graph(), in[0].DType(), 2)
		alone := TrackBasis(in[0], in[3], rate, 4)
		stack := TrackBasis(Stack(in[:3], 0), Stack(in[3:], 0), rate, 4)
		at := func(i int) *Node { return Squeeze(Slice(stack, AxisElem(i)), 0) }
		return []*Node{
			ReduceAllMax(Abs(Sub(at(0), alone))),
			ReduceAllMax(Abs(Sub(at(1), in[1]))),
			ReduceAllMax(Abs(Sub(at(2), in[2]))),
			ReduceAllMax(Abs(Sub(alone, in[0]))),
		}
	}, []*tensors.Tensor{toFloat32(q[0]), toFloat32(q[1]), toFloat32(q[2]), toFloat32(p[0]), toFloat32(p[1]), toFloat32(p[2])})
	require.NoError(t, err)
	require.Less(t, outs[0].Value().(float32), float32(1e-6), "the finite matrix moves as alone")
	require.Less(t, outs[1].Value().(float32), float32(1e-6), "an infinite power product moved its basis")
	require.Less(t, outs[2].Value().(float32), float32(1e-6), "a NaN power product moved its basis")
	require.Greater(t, outs[3].Value().(float32), float32(1e-2), "the finite matrix's basis moved")
}

// TestDirectStepEqualsTheFullGradientsProducts: DirectStep's coefficient is the projection of
// the whole batch's ∂W, and its tracking products are those of the leading rows' ∂W (the power
// product up to a positive scale, the sketch exactly), on both sides, with the basis on the
// smaller side of W (the coefficient taken as Qᵀ·zᵀ·other) and on the larger one.
func TestDirectStepEqualsTheFullGradientsProducts(t *testing.T) {
	forEachDirectLayout(t, 9, func(l directLayout) {
		outs, err := ExecOnceN(testBackend(t), func(x, dy, q, omega *Node) []*Node {
			coef, tp := DirectStep(x, dy, q, Transpose(omega, 0, 1), l.side, l.k)
			headGrad := TransposedTimes(SliceAlong(x, 0, 0, l.k), SliceAlong(dy, 0, 0, l.k))
			power, sketch := trackingErrors(sideMatrix(headGrad, l.side), q, omega, tp)
			return []*Node{relativeError(coef, ProjectMatrix(TransposedTimes(x, dy), q, l.side)), power, sketch}
		}, l.inputs()...)
		require.NoError(t, err)
		for i, o := range outs {
			require.Less(t, o.Value().(float32), float32(1e-5), "%s: product %d", l, i)
		}
	})
}

// directLayout is one case of the direct path's products: a batch x [b, m] and ∂y [b, n], a
// basis of rank 3 on one side of W [m, n], a sketch Ω on the other, and the tracked rows k.
type directLayout struct {
	m, n, k  int
	side     Side
	x, dy    *mat.Dense
	q, omega *mat.Dense
}

func (l directLayout) String() string {
	return fmt.Sprintf("W %d×%d, %s side, %d tracked rows", l.m, l.n, l.side, l.k)
}

// inputs are the layout's x, ∂y, Q and Ω as float32 tensors.
func (l directLayout) inputs() []any {
	return []any{toFloat32(l.x), toFloat32(l.dy), toFloat32(l.q), toFloat32(l.omega)}
}

// forEachDirectLayout calls fn for W 13×8 and 8×13 (the basis on W's smaller side and on its
// larger one), on both sides, tracking from all 19 rows of the batch and from 7.
func forEachDirectLayout(t *testing.T, seed uint64, fn func(directLayout)) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed))
	const b, r = 19, 3
	for _, dims := range [][2]int{{13, 8}, {8, 13}} {
		m, n := dims[0], dims[1]
		x, dy := gaussianDense(rng, b, m), gaussianDense(rng, b, n)
		for _, side := range []Side{Left, Right} {
			rows, other := m, n
			if side == Right {
				rows, other = n, m
			}
			q, omega := denseOf(RandomOrthonormal(rows, r, 2)), gaussianDense(rng, other, DefaultSketchColumns)
			for _, k := range []int{b, 7} {
				fn(directLayout{m: m, n: n, k: k, side: side, x: x, dy: dy, q: q, omega: omega})
			}
		}
	}
}

// TestSketchRowsIsTheSketchTransposed: DirectStep's Ω in rows is the same matrix as Sketch's.
func TestSketchRowsIsTheSketchTransposed(t *testing.T) {
	sketch, rows := Sketch(7, 4), SketchRows(7, 4)
	require.Len(t, rows, 4)
	for j := range rows {
		require.Len(t, rows[j], 7)
		for i := range rows[j] {
			require.Equal(t, sketch[i][j], rows[j][i])
		}
	}
}
