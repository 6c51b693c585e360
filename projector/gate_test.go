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
			// Equal booleans and integers too: gated together, several variables' learning each
			// return Const(false) (one cached scalar) when skipped; the transformer's step then
			// failed with "output 11 not computed" until the markers differed for booleans.
			otherwise := []*Node{ScalarZero(g, dtypes.Float32), Zeros(g, shapes.Make(dtypes.Float32, 4)),
				Zeros(g, shapes.Make(dtypes.Float32, 4)), ScalarZero(g, dtypes.Float32),
				Const(g, false), Const(g, false), Const(g, int32(0)), Const(g, int32(0))}
			return CheckGate(Const(g, run), []*Node{x}, otherwise, func(in []*Node) []*Node {
				positive := GreaterThan(ReduceAllSum(in[0]), ScalarZero(g, dtypes.Float32))
				return []*Node{ReduceAllSum(in[0]), Neg(in[0]), MulScalar(in[0], 2), ReduceAllMax(in[0]),
					positive, LogicalNot(positive), Const(g, int32(3)), Const(g, int32(5))}
			})
		}, []float32{1, 2, 3, 4})
		require.NoError(t, err, "run %v", run)
		if run {
			require.Equal(t, []float32{-1, -2, -3, -4}, outs[1].Value())
			require.Equal(t, []float32{2, 4, 6, 8}, outs[2].Value())
			require.Equal(t, float32(4), outs[3].Value())
			require.Equal(t, []any{true, false, int32(3), int32(5)}, []any{outs[4].Value(), outs[5].Value(), outs[6].Value(), outs[7].Value()})
		} else {
			require.Equal(t, []float32{0, 0, 0, 0}, outs[2].Value())
			require.Equal(t, []any{false, false, int32(0), int32(0)}, []any{outs[4].Value(), outs[5].Value(), outs[6].Value(), outs[7].Value()})
		}
	}
}
