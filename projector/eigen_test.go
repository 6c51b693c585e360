package projector

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"

	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/stretchr/testify/require"
	"gonum.org/v1/gonum/mat"
)

func TestSymmetricEigenMatchesGonum(t *testing.T) {
	backend := testBackend(t)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{1, 2, 5, 12, 17, 24} {
		// A random symmetric matrix with a spread spectrum, including a repeated eigenvalue.
		b := make([]float64, n*n)
		for i := range b {
			b[i] = rng.NormFloat64()
		}
		bm := mat.NewDense(n, n, b)
		var sym mat.SymDense
		sym.SymOuterK(1, bm)
		flat := make([]float64, n*n)
		for i := 0; i < n; i++ {
			for j := 0; j < n; j++ {
				flat[i*n+j] = sym.At(i, j)
			}
		}
		outs := MustExecOnceN(backend, func(a *Node) (*Node, *Node) {
			return SymmetricEigen(a, DefaultJacobiSweeps)
		}, tensors.FromFlatDataAndDimensions(flat, n, n))
		values := tensors.MustCopyFlatData[float64](outs[0])
		vectors := tensors.MustCopyFlatData[float64](outs[1])

		var eig mat.EigenSym
		require.True(t, eig.Factorize(&sym, true))
		want := eig.Values(nil)
		sort.Sort(sort.Reverse(sort.Float64Slice(want)))
		for i := range want {
			require.InDelta(t, want[i], values[i], 1e-9*math.Max(1, math.Abs(want[0])), "n=%d eigenvalue %d", n, i)
		}
		// A·u = λ·u for each returned pair, and U orthonormal.
		u := mat.NewDense(n, n, vectors)
		var au mat.Dense
		au.Mul(&sym, u)
		for c := 0; c < n; c++ {
			for r := 0; r < n; r++ {
				require.InDelta(t, values[c]*u.At(r, c), au.At(r, c), 1e-8*math.Max(1, math.Abs(want[0])))
			}
		}
		var utu mat.Dense
		utu.Mul(u.T(), u)
		for r := 0; r < n; r++ {
			for c := 0; c < n; c++ {
				want := 0.0
				if r == c {
					want = 1
				}
				require.InDelta(t, want, utu.At(r, c), 1e-10)
			}
		}
	}
}
