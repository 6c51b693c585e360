package projector

import (
	"math/rand/v2"
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"

	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/stretchr/testify/require"
)

// TestGatedLearningCapturesNothing: the one closure left in a step graph, the temporal
// eigen-solver's While, takes every value through its parameters (XLA refuses captures), and
// computes what the ungated solver computes.
func TestGatedLearningCapturesNothing(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	snaps := toFloat32(stackWithSpectrum(rng, 5, 9, []float64{3, 2, 1, 0.5, 0.1}))
	var captured []string
	outs, err := ExecOnceN(testBackend(t), func(snaps *Node) []*Node {
		g := snaps.Graph()
		opts := TemporalOptions{Rank: 2}
		prev := Temporal{Basis: Zeros(g, shapes.Make(dtypes.Float32, 9, 2)), SingularValues: Zeros(g, shapes.Make(dtypes.Float32, 2)),
			ExplainedVariance: ScalarZero(g, dtypes.Float32), Rank: Const(g, int32(0))}
		gated := LearnTemporalWhen(Const(g, true), snaps, opts, prev)
		plain := LearnTemporal(snaps, opts)
		captured = CapturedValues(g)
		return []*Node{gated.Basis, plain.Basis}
	}, snaps)
	require.NoError(t, err)
	require.Empty(t, captured, "closures must take every value through their parameters")
	require.InDeltaSlice(t, tensors.MustCopyFlatData[float32](outs[1]), tensors.MustCopyFlatData[float32](outs[0]), 1e-5)
}
