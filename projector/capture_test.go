package projector

import (
	"math/rand/v2"
	"os"
	"reflect"
	"testing"

	"github.com/gomlx/go-xla/compute/xla"

	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/stretchr/testify/require"
)

// TestCaptureFreeGates builds the gated learning of both subspaces in the capture-free form that
// XLA needs (a While carrying the values in and out) and checks that no closure op uses a value
// of another function, and that it computes what the If form computes.
func TestCaptureFreeGates(t *testing.T) {
	build := func(g *Graph, grad, snapshots *Node) []*Node {
		learn := GreaterThan(ReduceAllSum(Abs(grad)), ScalarZero(g, grad.DType())) // true
		learned := Gate(learn, []*Node{grad}, []*Node{ZerosLike(grad), ScalarZero(g, grad.DType())}, func(in []*Node) []*Node {
			lm := LearnMatrix(in[0], 2, Left, nil, nil, DefaultPowerIterations)
			return []*Node{DotProduct(lm.Basis, TransposedTimes(lm.Basis, in[0])), lm.ExplainedVariance}
		})
		values, _ := SymmetricEigen(DotProduct(snapshots, Transpose(snapshots, 0, 1)), DefaultJacobiSweeps)
		return append(learned, values)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	grad := toFloat32(stackWithSpectrum(rng, 12, 8, []float64{4, 2, 0.1}))
	snaps := toFloat32(stackWithSpectrum(rng, 5, 9, []float64{3, 2, 1, 0.5, 0.1}))
	var captured []string
	run := func() []float32 {
		outs, err := ExecOnceN(testBackend(t), func(grad, snaps *Node) []*Node {
			outs := build(grad.Graph(), grad, snaps)
			captured = CapturedValues(grad.Graph())
			return outs
		}, grad, snaps)
		require.NoError(t, err)
		var flat []float32
		for _, o := range outs {
			flat = append(flat, tensors.MustCopyFlatData[float32](o)...)
		}
		return flat
	}
	withIf := run()
	if testBackend(t).Name() == "Go Backend" && os.Getenv(CaptureFreeEnv) != "1" {
		require.NotEmpty(t, captured, "the If form captures (otherwise this test cannot tell the forms apart)")
	}
	t.Setenv(CaptureFreeEnv, "1")
	free := run()
	require.Empty(t, captured, "capture-free gates must not use values of other functions")
	require.InDeltaSlice(t, withIf, free, 1e-5)
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
