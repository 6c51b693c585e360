package projector

import (
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	"github.com/gomlx/go-xla/compute/xla"

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

// TestXLABuilderCachesAreFound guards the workaround for go-xla's builder-wide function caches:
// the fields newIsolatedClosure swaps out must exist, as maps, in the go-xla version this module
// builds with (a new version without them needs the workaround reviewed), and isolateMap must
// empty a map for the closure and restore it afterwards.
func TestXLABuilderCachesAreFound(t *testing.T) {
	builder := reflect.TypeFor[xla.Builder]()
	for _, name := range xlaCacheFields {
		f, ok := builder.FieldByName(name)
		require.True(t, ok, "go-xla's Builder has no field %s", name)
		require.Equal(t, reflect.Map, f.Type.Kind(), name)
	}
	var holder struct{ cache map[string]int }
	holder.cache = map[string]int{"main": 1}
	restore := isolateMap(reflect.ValueOf(&holder).Elem().FieldByName("cache"))
	require.Empty(t, holder.cache, "emptied while a closure is built")
	holder.cache["closure"] = 2
	restore()
	require.Equal(t, map[string]int{"main": 1}, holder.cache, "restored afterwards, without the closure's entries")
}
