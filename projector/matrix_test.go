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

func matrixFromTensor(t *tensors.Tensor) *mat.Dense {
	r, c := t.Shape().Dim(0), t.Shape().Dim(1)
	out := mat.NewDense(r, c, nil)
	for i, v := range tensors.MustCopyFlatData[float32](t) {
		out.Set(i/c, i%c, float64(v))
	}
	return out
}

func TestLearnMatrixFindsTheDominantSubspace(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 8))
	m, n, r := 40, 24, 3
	for _, side := range []Side{Left, Right} {
		// A gradient with 3 dominant directions over a small noise floor.
		grad := stackWithSpectrum(rng, m, n, []float64{10, 6, 4, 0.05, 0.04, 0.03})
		outs, err := ExecOnceN(testBackend(t), func(gr *Node) []*Node {
			lm := LearnMatrix(gr, r, side, nil, nil, DefaultPowerIterations)
			return []*Node{lm.Basis, lm.ExplainedVariance, lm.Valid, OrthonormalityError(lm.Basis)}
		}, toFloat32(grad))
		require.NoError(t, err)
		q := matrixFromTensor(outs[0])
		require.True(t, outs[2].Value().(bool))
		require.Less(t, outs[3].Value().(float32), float32(1e-5), "%s basis not orthonormal", side)
		var svd mat.SVD
		require.True(t, svd.Factorize(grad, mat.SVDThin))
		var want mat.Dense
		if side == Left {
			svd.UTo(&want)
		} else {
			svd.VTo(&want)
		}
		rows, _ := want.Dims()
		require.Less(t, projectorDistance(want.Slice(0, rows, 0, r), q), 1e-3, "%s subspace differs from the SVD's", side)
		energy := 10.0*10 + 6*6 + 4*4
		require.InDelta(t, energy/(energy+0.05*0.05+0.04*0.04+0.03*0.03), float64(outs[1].Value().(float32)), 1e-4)
	}
}

func TestLearnMatrixWarmStartAndDegenerateGradients(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	m, n, r := 30, 20, 2
	grad := stackWithSpectrum(rng, m, n, []float64{5, 3, 0.1})
	zero := mat.NewDense(m, n, nil)
	nan := mat.DenseCopyOf(grad)
	nan.Set(3, 4, math.NaN())
	outs, err := ExecOnceN(testBackend(t), func(gr, z, bad *Node) []*Node {
		cold := LearnMatrix(gr, r, Left, nil, nil, DefaultPowerIterations)
		// Warm-started from the cold basis, one iteration is enough to stay on the subspace.
		warm := LearnMatrix(gr, r, Left, cold.Basis, Const(gr.Graph(), true), 1)
		fromZero := LearnMatrix(z, r, Left, cold.Basis, Const(gr.Graph(), true), 1)
		fromNaN := LearnMatrix(bad, r, Left, cold.Basis, Const(gr.Graph(), true), 1)
		return []*Node{
			ReduceAllMax(Abs(Sub(DotProduct(cold.Basis, Transpose(cold.Basis, 0, 1)), DotProduct(warm.Basis, Transpose(warm.Basis, 0, 1))))),
			fromZero.Valid, ReduceAllMax(Abs(Sub(fromZero.Basis, cold.Basis))),
			fromNaN.Valid, ReduceAllMax(Abs(Sub(fromNaN.Basis, cold.Basis))), LogicalAll(IsFinite(fromNaN.Basis)),
		}
	}, toFloat32(grad), toFloat32(zero), toFloat32(nan))
	require.NoError(t, err)
	require.Less(t, outs[0].Value().(float32), float32(1e-4), "warm start must stay on the same subspace")
	require.False(t, outs[1].Value().(bool), "a zero gradient must be reported invalid")
	require.Zero(t, outs[2].Value().(float32), "a zero gradient keeps the previous basis")
	require.False(t, outs[3].Value().(bool))
	require.Zero(t, outs[4].Value().(float32), "a non-finite gradient keeps the previous basis")
	require.True(t, outs[5].Value().(bool))
}

func TestDirectCoefficientsEqualProjectedFullGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 3))
	b, m, n, r := 17, 12, 9, 3
	randMat := func(rows, cols int) *mat.Dense {
		d := make([]float64, rows*cols)
		for i := range d {
			d[i] = rng.NormFloat64()
		}
		return mat.NewDense(rows, cols, d)
	}
	x, dy := randMat(b, m), randMat(b, n)
	for _, side := range []Side{Left, Right} {
		dim := m
		if side == Right {
			dim = n
		}
		q := randMat(dim, r)
		outs, err := ExecOnceN(testBackend(t), func(x, dy, q *Node) []*Node {
			q = Orthonormalize(q, 1e-7)
			direct := DirectCoefficients(x, dy, q, side)
			full := ProjectMatrix(DotProduct(Transpose(x, 0, 1), dy), q, side)
			relErr := Div(Sqrt(ReduceAllSum(Square(Sub(direct, full)))), Sqrt(ReduceAllSum(Square(full))))
			lifted := LiftMatrix(q, direct, side)
			// Lifting then projecting again is the identity on coefficients.
			roundTrip := ReduceAllMax(Abs(Sub(ProjectMatrix(lifted, q, side), direct)))
			return []*Node{relErr, roundTrip, MatrixResidual(lifted, q, side)}
		}, toFloat32(x), toFloat32(dy), toFloat32(q))
		require.NoError(t, err)
		require.Less(t, outs[0].Value().(float32), float32(1e-5), "%s: direct ≠ projected full gradient", side)
		require.Less(t, outs[1].Value().(float32), float32(1e-4))
		require.Less(t, outs[2].Value().(float32), float32(1e-5), "a lifted update lies in the subspace")
	}
	require.ErrorContains(t, CheckMatrix(10, 4, 5, Right), "exceeds the right side")
	require.ErrorContains(t, CheckMatrix(10, 4, 0, Left), "rank 0 is impossible")
}

// TestTransposedTimesLayout checks aᵀ·b against gonum and that its product runs in the layout the
// Go backend's kernels take without copies (left operand contracted on its last axis, right on its
// first), with only the cheaper operand transposed explicitly: the backend would otherwise copy
// both operands, large activations included, into transposed form at every step.
func TestTransposedTimesLayout(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	randMat := func(rows, cols int) *mat.Dense {
		d := make([]float64, rows*cols)
		for i := range d {
			d[i] = rng.NormFloat64()
		}
		return mat.NewDense(rows, cols, d)
	}
	for _, c := range []struct {
		k, m, n    int
		transposed int // values copied by explicit transposes
	}{
		{k: 64, m: 4, n: 32, transposed: 64 * 4},              // a is the small side: transpose a
		{k: 64, m: 32, n: 4, transposed: 64*4 + 4*32},         // b is: transpose b and the small result
		{k: 64, m: 32, n: 0, transposed: 0},                   // b a vector: b·a, no copy
		{k: 8, m: 8, n: 8, transposed: 64},                    // a tie transposes a
		{k: 1024, m: 1024, n: 8, transposed: 1024*8 + 8*1024}, // the Right side's direct coefficients
	} {
		a := randMat(c.k, c.m)
		var b *mat.Dense
		if c.n == 0 {
			b = randMat(c.k, 1)
		} else {
			b = randMat(c.k, c.n)
		}
		var want mat.Dense
		want.Mul(a.T(), b)
		var copied int
		var layouts []string
		outs, err := ExecOnceN(testBackend(t), func(a, b *Node) []*Node {
			if c.n == 0 {
				b = Reshape(b, c.k)
			}
			g := a.Graph()
			first := len(g.Nodes())
			got := TransposedTimes(a, b)
			for _, node := range g.Nodes()[first:] {
				switch node.Type() {
				case NodeTypeTranspose:
					copied += node.Inputs()[0].Shape().Size()
				case NodeTypeDotGeneral:
					lhsLast := node.Inputs()[0].Rank() - 1
					s := node.String()
					layouts = append(layouts, s)
					require.Contains(t, s, fmt.Sprintf("lhsContractingAxes=[%d]", lhsLast), "left operand not contracted on its last axis")
					require.Contains(t, s, "rhsContractingAxes=[0]", "right operand not contracted on its first axis")
				}
			}
			if c.n == 0 {
				got = InsertAxes(got, -1)
			}
			return []*Node{got}
		}, toFloat32(a), toFloat32(b))
		require.NoError(t, err)
		require.Len(t, layouts, 1, "one product")
		require.Equal(t, c.transposed, copied, "k=%d m=%d n=%d: values copied by transposes", c.k, c.m, c.n)
		got := matrixFromTensor(outs[0])
		var diff mat.Dense
		diff.Sub(got, &want)
		require.Less(t, mat.Norm(&diff, 2)/mat.Norm(&want, 2), 1e-5, "k=%d m=%d n=%d: aᵀb differs from gonum's", c.k, c.m, c.n)
	}
}
