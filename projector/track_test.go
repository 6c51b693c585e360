package projector

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/stretchr/testify/require"
	"gonum.org/v1/gonum/mat"
)

// gaussianDense is a rows×cols matrix of standard normal entries.
func gaussianDense(rng *rand.Rand, rows, cols int) *mat.Dense {
	d := make([]float64, rows*cols)
	for i := range d {
		d[i] = rng.NormFloat64()
	}
	return mat.NewDense(rows, cols, d)
}

func denseOf(rows [][]float64) *mat.Dense {
	out := mat.NewDense(len(rows), len(rows[0]), nil)
	for i, row := range rows {
		out.SetRow(i, row)
	}
	return out
}

func TestDirectTrackingProductsEqualTheFullGradientsProducts(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	b, m, n, r, s := 19, 13, 8, 3, 2
	randMat := func(rows, cols int) *mat.Dense { return gaussianDense(rng, rows, cols) }
	x, dy := randMat(b, m), randMat(b, n)
	for _, side := range []Side{Left, Right} {
		rows, other := m, n
		if side == Right {
			rows, other = n, m
		}
		q, omega := denseOf(RandomOrthonormal(rows, r, 1)), randMat(other, s)
		outs, err := ExecOnceN(testBackend(t), func(x, dy, q, omega *Node) []*Node {
			grad := TransposedTimes(x, dy)
			coef := DirectCoefficients(x, dy, q, side)
			direct := DirectTrackingProducts(x, dy, coef, omega, side)
			full := FullTrackingProducts(grad, coef, omega, side)
			power, sketch := trackingErrors(sideMatrix(grad, side), q, omega, direct)
			return []*Node{power, sketch, relativeError(full.Power, direct.Power), relativeError(full.Sketch, direct.Sketch)}
		}, toFloat32(x), toFloat32(dy), toFloat32(q), toFloat32(omega))
		require.NoError(t, err)
		for i, o := range outs {
			require.Less(t, o.Value().(float32), float32(1e-5), "%s side, product %d", side, i)
		}
	}
}

// sideMatrix is A, the matrix a basis on side tracks: ∂W (Left) or ∂Wᵀ (Right).
func sideMatrix(grad *Node, side Side) *Node {
	if side == Right {
		return Transpose(grad, 0, 1)
	}
	return grad
}

// trackingErrors are the relative errors of tracking products of A against their definition:
// the power product is A·Aᵀ·Q up to a positive scale, the sketch exactly A·Ω.
func trackingErrors(a, q, omega *Node, tp TrackingProducts) (power, sketch *Node) {
	want := DotProduct(a, TransposedTimes(a, q))
	scale := Div(ReduceAllMax(Abs(want)), ReduceAllMax(Abs(tp.Power)))
	return relativeError(tp.Power, Div(want, scale)), relativeError(tp.Sketch, DotProduct(a, omega))
}

func relativeError(got, want *Node) *Node { return RelativeLength(Sub(got, want), want) }

// TestTrackBasisFindsTheDominantSubspace: from a random start, tracking at the fast rate on
// gradients of one fixed dominant subspace (plus noise) converges to it, and every basis on
// the way is orthonormal — also for a gradient of rank below r, and for a zero, a huge and a
// non-finite one.
func TestTrackBasisFindsTheDominantSubspace(t *testing.T) {
	rng := rand.New(rand.NewPCG(6, 1))
	m, n, r := 48, 20, 4
	grad := stackWithSpectrum(rng, m, n, []float64{9, 7, 5, 4, 0.3, 0.2, 0.1})
	rankTwo := stackWithSpectrum(rng, m, n, []float64{3, 2})
	huge := mat.DenseCopyOf(grad)
	huge.Scale(1e30, huge)
	nan := mat.DenseCopyOf(grad)
	nan.Set(1, 1, math.NaN())
	const rate = 4.0
	for _, side := range []Side{Left, Right} {
		rows, other := m, n
		if side == Right {
			rows, other = n, m
		}
		// The sketch's Ω is irrelevant here: a zero Ω gives a zero sketch.
		noSketch := func(g *Graph) *Node { return Zeros(g, shapes.Make(dtypes.Float32, other, 1)) }
		q := toFloat32(denseOf(RandomOrthonormal(rows, r, 7)))
		for step := range 16 {
			outs, err := ExecOnceN(testBackend(t), func(q, gr *Node) []*Node {
				p := FullTrackingProducts(gr, ProjectMatrix(gr, q, side), noSketch(q.Graph()), side)
				next := TrackBasis(q, p.Power, Scalar(q.Graph(), q.DType(), rate), rate)
				return []*Node{next, OrthonormalityError(next)}
			}, q, toFloat32(grad))
			require.NoError(t, err)
			require.Less(t, outs[1].Value().(float32), float32(1e-5), "%s side, step %d: not orthonormal", side, step)
			q = outs[0]
		}
		var svd mat.SVD
		require.True(t, svd.Factorize(grad, mat.SVDThin))
		var want mat.Dense
		if side == Left {
			svd.UTo(&want)
		} else {
			svd.VTo(&want)
		}
		require.Less(t, projectorDistance(want.Slice(0, rows, 0, r), matrixFromTensor(q)), 1e-2, "%s side: not the dominant subspace", side)

		for name, g := range map[string]*mat.Dense{"rank 2": rankTwo, "zero": mat.NewDense(m, n, nil), "huge": huge, "NaN": nan} {
			outs, err := ExecOnceN(testBackend(t), func(q, gr *Node) []*Node {
				p := FullTrackingProducts(gr, ProjectMatrix(gr, q, side), noSketch(q.Graph()), side)
				next := TrackBasis(q, p.Power, Scalar(q.Graph(), q.DType(), rate), rate)
				return []*Node{OrthonormalityError(next), ReduceAllMax(Abs(Sub(next, q)))}
			}, q, toFloat32(g))
			require.NoError(t, err, name)
			require.Less(t, outs[0].Value().(float32), float32(1e-5), "%s side, %s gradient: not orthonormal", side, name)
			if name == "zero" || name == "NaN" {
				require.Less(t, outs[1].Value().(float32), float32(1e-5), "%s side, %s gradient moved the basis", side, name)
			}
		}
	}
}

func TestSketchResidualEstimatesTheResidual(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 9))
	m, n, r := 40, 30, 3
	grad := stackWithSpectrum(rng, m, n, []float64{5, 4, 3, 2, 1})
	var svd mat.SVD
	require.True(t, svd.Factorize(grad, mat.SVDThin))
	var u mat.Dense
	svd.UTo(&u)
	top := mat.DenseCopyOf(u.Slice(0, m, 0, r))
	exact := math.Sqrt((2.0*2 + 1) / (25 + 16 + 9 + 4 + 1))
	omega := toFloat32(denseOf(Sketch(n, 64)))
	outs, err := ExecOnceN(testBackend(t), func(gr, q, omega *Node) []*Node {
		sketch := DotProduct(gr, omega)
		return []*Node{SketchResidual(q, sketch), SketchResidual(q, ZerosLike(sketch))}
	}, toFloat32(grad), toFloat32(top), omega)
	require.NoError(t, err)
	require.InDelta(t, exact, float64(outs[0].Value().(float32)), 0.1, "sketch estimate of the residual")
	require.Equal(t, float32(0), outs[1].Value().(float32), "a zero sketch has no residual")
}

// turningBasis is the rotation tests' fixture: two unrelated orthonormal [16, 3] bases (the old
// and the new) and a [3, 10] coefficient-shaped state drawn from the stream, as float32 tensors.
func turningBasis(stream uint64) (oldQ, newQ, c *tensors.Tensor) {
	m, n, r := 16, 10, 3
	rng := rand.New(rand.NewPCG(8, stream))
	return toFloat32(denseOf(RandomOrthonormal(m, r, 1))), toFloat32(denseOf(RandomOrthonormal(m, r, 2))),
		toFloat32(stackWithSpectrum(rng, r, n, []float64{1, 1, 1}))
}

func TestRotateCoefficientsFollowsTheBasis(t *testing.T) {
	oldQ, newQ, c := turningBasis(2)
	outs, err := ExecOnceN(testBackend(t), func(oldQ, newQ, c *Node) []*Node {
		rot := TransposedTimes(newQ, oldQ)
		// Left: the lifted first moment, projected on the new basis.
		want := TransposedTimes(newQ, DotProduct(oldQ, c))
		got := RotateCoefficients(c, rot, Left, false)
		// Right side on the transposed problem gives the transposed answer.
		gotRight := RotateCoefficients(Transpose(c, 0, 1), rot, Right, false)
		same := RotateCoefficients(Abs(c), TransposedTimes(oldQ, oldQ), Left, true)
		return []*Node{RelativeLength(Sub(got, want), want), RelativeLength(Sub(gotRight, Transpose(want, 0, 1)), want),
			RelativeLength(Sub(same, Abs(c)), c)}
	}, oldQ, newQ, c)
	require.NoError(t, err)
	for i, o := range outs {
		require.Less(t, o.Value().(float32), float32(1e-5), "check %d", i)
	}
}

// TestRotatedSecondMomentKeepsItsMass: an isotropic second moment (every coordinate's squared
// coefficient averaging s) stays s on every new axis, however far the basis turns; with R∘R
// alone a new axis kept only its share of the old span (here about r/m), and Adam's steps
// along it grew.
func TestRotatedSecondMomentKeepsItsMass(t *testing.T) {
	oldQ, newQ, v := turningBasis(3)
	outs, err := ExecOnceN(testBackend(t), func(oldQ, newQ, v *Node) []*Node {
		rot := TransposedTimes(newQ, oldQ)
		iso := MulScalar(OnesLike(v), 0.25)
		return []*Node{
			RotateCoefficients(iso, rot, Left, true),
			RotateCoefficients(Transpose(iso, 0, 1), rot, Right, true),
			ReduceAllMin(RotateCoefficients(Square(v), rot, Left, true)),
			ReduceAllMin(RotateCoefficients(Transpose(Square(v), 0, 1), rot, Right, true)),
		}
	}, oldQ, newQ, v)
	require.NoError(t, err)
	for i, o := range outs[:2] {
		for _, x := range tensors.MustCopyFlatData[float32](o) {
			require.InDelta(t, 0.25, x, 1e-6, "side %d: an isotropic moment keeps its value on every new axis", i)
		}
	}
	require.GreaterOrEqual(t, outs[2].Value().(float32), float32(0))
	require.GreaterOrEqual(t, outs[3].Value().(float32), float32(0))
}

func TestNewtonSchulzSteps(t *testing.T) {
	require.Equal(t, 0, NewtonSchulzSteps(0), "an orthonormal basis needs no iteration")
	prev := 0
	for _, rate := range []float64{0.1, 1, 4, 20} {
		n := NewtonSchulzSteps(rate)
		require.Greater(t, n, prev, "a faster rate needs more iterations")
		prev = n
	}
	require.LessOrEqual(t, NewtonSchulzSteps(4), 6, "the scaled iteration is short")
	q := RandomOrthonormal(30, 5, 3)
	var maxErr float64
	for i := range 5 {
		for j := range 5 {
			var dot float64
			for k := range 30 {
				dot += q[k][i] * q[k][j]
			}
			if i == j {
				dot--
			}
			maxErr = math.Max(maxErr, math.Abs(dot))
		}
	}
	require.Less(t, maxErr, 1e-12, "RandomOrthonormal is orthonormal")
}

// TestRotateCoefficientsStackIsEachMatrixsRotation: the stacked form rotates each matrix's state
// as RotateCoefficients does, on both sides, for first and second moments, and Rotations is
// each pair's Q_nextᵀ·Q_old.
func TestRotateCoefficientsStackIsEachMatrixsRotation(t *testing.T) {
	oldA, newA, a := turningBasis(4)
	oldB, newB, b := turningBasis(5)
	outs, err := ExecOnceN(testBackend(t), func(oldA, newA, a, oldB, newB, b *Node) []*Node {
		rots := Rotations(Stack([]*Node{newA, newB}, 0), Stack([]*Node{oldA, oldB}, 0))
		single := []*Node{TransposedTimes(newA, oldA), TransposedTimes(newB, oldB)}
		var errs []*Node
		for i := range 2 {
			errs = append(errs, RelativeLength(Sub(Squeeze(Slice(rots, AxisElem(i)), 0), single[i]), single[i]))
		}
		for _, squared := range []bool{false, true} {
			cs := []*Node{Abs(a), Abs(b)}
			left := RotateCoefficientsStack(Stack(cs, 0), rots, Left, squared)
			right := RotateCoefficientsStack(Stack([]*Node{Transpose(cs[0], 0, 1), Transpose(cs[1], 0, 1)}, 0), rots, Right, squared)
			for i := range 2 {
				want := RotateCoefficients(cs[i], single[i], Left, squared)
				errs = append(errs, RelativeLength(Sub(Squeeze(Slice(left, AxisElem(i)), 0), want), want))
				wantRight := RotateCoefficients(Transpose(cs[i], 0, 1), single[i], Right, squared)
				errs = append(errs, RelativeLength(Sub(Squeeze(Slice(right, AxisElem(i)), 0), wantRight), wantRight))
			}
		}
		return errs
	}, oldA, newA, a, oldB, newB, b)
	require.NoError(t, err)
	for i, o := range outs {
		require.Less(t, o.Value().(float32), float32(1e-6), "check %d", i)
	}
}

// TestKeepRowsZeroesWhatItDropsNaNIncluded: KeepRows keeps the rows it is told to, exactly, and
// zeroes the others even where they hold NaN or Inf; ChooseRows takes the other operand's rows
// there.
func TestKeepRowsZeroesWhatItDropsNaNIncluded(t *testing.T) {
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	x := [][][]float32{{{1, -2}, {3, 4}}, {{nan, 1}, {2, inf}}, {{0.5, 0.25}, {-1, 8}}}
	outs, err := ExecOnceN(testBackend(t), func(x *Node) []*Node {
		g := x.Graph()
		keep := Const(g, []bool{true, false, true})
		other := OnesLike(x)
		return []*Node{KeepRows(x, keep), ChooseRows(keep, x, other), ChooseRows(Const(g, []bool{false, false, true}), x, other)}
	}, x)
	require.NoError(t, err)
	require.Equal(t, [][][]float32{{{1, -2}, {3, 4}}, {{0, 0}, {0, 0}}, {{0.5, 0.25}, {-1, 8}}}, outs[0].Value())
	require.Equal(t, [][][]float32{{{1, -2}, {3, 4}}, {{1, 1}, {1, 1}}, {{0.5, 0.25}, {-1, 8}}}, outs[1].Value())
	require.Equal(t, [][][]float32{{{1, 1}, {1, 1}}, {{1, 1}, {1, 1}}, {{0.5, 0.25}, {-1, 8}}}, outs[2].Value())
}
