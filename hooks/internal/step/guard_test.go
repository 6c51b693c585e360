package step

import (
	"math"
	"testing"

	. "github.com/gomlx/gomlx/core/graph"
	"github.com/stretchr/testify/require"
)

// TestHugeFiniteValuesCountAsBad: a gradient element above about 1.8e19 (float32) is finite and
// can leave the gradient's sum finite, but its square, Adam's second moment, is +Inf and would
// freeze the variable for good: the check looks at the sum of squares.
func TestHugeFiniteValuesCountAsBad(t *testing.T) {
	outs, err := ExecOnceN(testBackend(t), func(ok, huge, nan, negative *Node) []*Node {
		return []*Node{allFinite(ok), allFinite(huge), allFinite(nan), allFinite(negative)}
	}, []float32{1, -2, 3e18}, []float32{2e19, -2e19, 1}, []float32{1, float32(math.NaN())}, []float32{-3e38, 3e38})
	require.NoError(t, err)
	require.True(t, outs[0].Value().(bool), "ordinary values")
	require.False(t, outs[1].Value().(bool), "squares overflow although the sum is 1")
	require.False(t, outs[2].Value().(bool), "NaN")
	require.False(t, outs[3].Value().(bool), "values near float32's largest")
}
