package projector

import (
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/stretchr/testify/require"
)

// TestGateWithEqualOutputs: a gate whose skipped branch returns two equal computations (two
// zero vectors of one shape) must return both; the Go backend (compute v0.1.14) reported the
// second as "not computed" until Gate made them distinct.
func TestGateWithEqualOutputs(t *testing.T) {
	for _, run := range []bool{false, true} {
		outs, err := ExecOnceN(testBackend(t), func(x *Node) []*Node {
			g := x.Graph()
			otherwise := []*Node{ScalarZero(g, dtypes.Float32), Zeros(g, shapes.Make(dtypes.Float32, 4)),
				Zeros(g, shapes.Make(dtypes.Float32, 4)), ScalarZero(g, dtypes.Float32)}
			return CheckGate(Const(g, run), []*Node{x}, otherwise, func(in []*Node) []*Node {
				return []*Node{ReduceAllSum(in[0]), Neg(in[0]), MulScalar(in[0], 2), ReduceAllMax(in[0])}
			})
		}, []float32{1, 2, 3, 4})
		require.NoError(t, err, "run %v", run)
		if run {
			require.Equal(t, []float32{-1, -2, -3, -4}, outs[1].Value())
			require.Equal(t, []float32{2, 4, 6, 8}, outs[2].Value())
			require.Equal(t, float32(4), outs[3].Value())
		} else {
			require.Equal(t, []float32{0, 0, 0, 0}, outs[2].Value())
		}
	}
}
