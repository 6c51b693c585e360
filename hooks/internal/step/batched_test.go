package step

import (
	"math"
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/stretchr/testify/require"
)

// TestJoinGroupsJoinWhatConcatenateCan: tensors that differ only in their first axis share a
// group, in first-seen order; scalars and tensors over the limit stay alone.
func TestJoinGroupsJoinWhatConcatenateCan(t *testing.T) {
	g := NewGraph(testBackend(t), "join")
	xs := []*Node{
		Zeros(g, shapeOf(2, 3)), Zeros(g, shapeOf(5, 3)), Zeros(g, shapeOf(2, 4)),
		Zeros(g, shapeOf(7)), Zeros(g, shapeOf()), Zeros(g, shapeOf(9)), Zeros(g, shapeOf(100, 3)),
	}
	require.Equal(t, [][]int{{0, 1}, {2}, {3, 5}, {4}, {6}}, joinGroups(xs, 100))
	require.Equal(t, [][]int{{0, 1, 6}, {2}, {3, 5}, {4}}, joinGroups(xs, 0))
}

// TestAllFiniteBatchedFindsAnyBadTensor: joined, the check still fails on a NaN, an Inf or an
// overflowing square in any one tensor, whichever group it falls in.
func TestAllFiniteBatchedFindsAnyBadTensor(t *testing.T) {
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	check := func(bad int, value float32) bool {
		out, err := ExecOnceN(testBackend(t), func(a, b, c, s *Node) []*Node {
			return []*Node{allFiniteBatched(a.Graph(), []*Node{a, b, c, s})}
		}, pick(bad == 0, value, []float32{1, 2}), pick(bad == 1, value, []float32{3, 4, 5}),
			[][]float32{{1}, {pickScalar(bad == 2, value)}}, pickScalar(bad == 3, value))
		require.NoError(t, err)
		return out[0].Value().(bool)
	}
	require.True(t, check(-1, 0), "all finite")
	for bad := range 4 {
		for _, v := range []float32{nan, inf, 2e19} {
			require.False(t, check(bad, v), "tensor %d holds %g", bad, v)
		}
	}
	out, err := ExecOnceN(testBackend(t), func(x *Node) []*Node { return []*Node{allFiniteBatched(x.Graph(), nil)} }, float32(0))
	require.NoError(t, err)
	require.True(t, out[0].Value().(bool), "nothing to check")
}

// TestRowDotsAreThePerTensorSums: the step-length rule's batched sums equal the per-matrix ones.
func TestRowDotsAreThePerTensorSums(t *testing.T) {
	a := [][]float32{{1, 2}, {3, 4}}
	b := [][]float32{{-1, 0.5}, {2, 1}}
	c := [][]float32{{0, 1}, {1, 0}}
	out, err := ExecOnceN(testBackend(t), func(a, b, c *Node) []*Node {
		xs := []*Node{a, b, c}
		rows := rowsOf(xs, []int{0, 1, 2})
		return []*Node{rowDots(rows, rows), stacked(xs), unstacked(stacked(xs))[1]}
	}, a, b, c)
	require.NoError(t, err)
	require.Equal(t, []float32{30, 6.25, 2}, out[0].Value())
	require.Equal(t, [][][]float32{a, b, c}, out[1].Value())
	require.Equal(t, b, out[2].Value())
}

func shapeOf(dims ...int) shapes.Shape { return shapes.Make(dtypes.Float32, dims...) }

func pick(bad bool, value float32, ok []float32) []float32 {
	if bad {
		return append(append([]float32(nil), ok...), value)[1:]
	}
	return ok
}

func pickScalar(bad bool, value float32) float32 {
	if bad {
		return value
	}
	return 1
}
