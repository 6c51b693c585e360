package projector

import (
	"fmt"
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

func TestDirectCoefficientsEqualProjectedFullGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 3))
	b, m, n, r := 17, 12, 9, 3
	randMat := func(rows, cols int) *mat.Dense { return gaussianDense(rng, rows, cols) }
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
			inside := LiftMatrix(q, ProjectMatrix(lifted, q, side), side)
			return []*Node{relErr, roundTrip, RelativeLength(Sub(lifted, inside), lifted)}
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
	randMat := func(rows, cols int) *mat.Dense { return gaussianDense(rng, rows, cols) }
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
