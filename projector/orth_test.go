package projector

import (
	"testing"

	. "github.com/gomlx/gomlx/core/graph"
	"github.com/stretchr/testify/require"
)

// A matrix of tiny (but normal) float32 values has squares in the denormal range: its column
// norms, taken naively, lose digits and the "unit" columns come out with norm 0.9999 (found by
// FuzzLearnMatrix). Orthonormalize must return unit columns at any scale float32 can hold.
func TestOrthonormalizeAtEveryScale(t *testing.T) {
	for _, scale := range []float32{1e-37, 1e-20, 1, 1e15, 1e30} {
		a := [][]float32{{scale, 0, scale}, {0, 3 * scale, scale}, {0, 0, 2 * scale}, {scale, scale, 0}}
		outs, err := ExecOnceN(testBackend(t), func(x *Node) []*Node {
			q := Orthonormalize(x, 1e-7)
			return []*Node{OrthonormalityError(q), ReduceSum(Square(q), 0)}
		}, a)
		require.NoError(t, err)
		require.Less(t, outs[0].Value().(float32), float32(1e-6), "scale %g", scale)
		for j, n := range outs[1].Value().([]float32) {
			require.InDelta(t, 1, n, 1e-6, "scale %g: column %d has squared norm %g", scale, j, n)
		}
	}
}
