package upstream

import (
	"reflect"
	"runtime"
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	timage "github.com/gomlx/gomlx/core/tensors/images"
	"github.com/gomlx/gomlx/ml/layers"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gradsub/gradsub/internal/backends"
	"github.com/stretchr/testify/require"
)

// TestIsolateMap: a cache is emptied while a closure is built and restored afterwards, without
// the closure's entries; GoMLX's graph still has the scalar cache it empties.
func TestIsolateMap(t *testing.T) {
	var holder struct{ cache map[string]int }
	holder.cache = map[string]int{"main": 1}
	restore := isolateMap(reflect.ValueOf(&holder).Elem().FieldByName("cache"))
	require.Empty(t, holder.cache, "emptied while a closure is built")
	holder.cache["closure"] = 2
	restore()
	require.Equal(t, map[string]int{"main": 1}, holder.cache, "restored afterwards, without the closure's entries")

	graphType := reflect.TypeFor[Graph]()
	for _, name := range []string{"scalars", "tensorConstants"} {
		f, ok := graphType.FieldByName(name)
		require.True(t, ok, "GoMLX's Graph has no field %s: review IsolateFunctionCaches", name)
		require.Equal(t, reflect.Map, f.Type.Kind(), name)
	}
}

// TestDescriptionsParse pins the description formats read for DotGeneral, ConvGeneral and
// FusedDense nodes (GoMLX exposes their parameters only through Node.String).
func TestDescriptionsParse(t *testing.T) {
	backend, err := backends.New("go")
	require.NoError(t, err)
	f32 := func(dims ...int) *tensors.Tensor { return tensors.FromShape(shapes.Make(dtypes.Float32, dims...)) }
	_, err = ExecOnceN(backend, func(x, kernel, a, b *Node) []*Node {
		y := Convolve(x, kernel).ChannelsAxis(timage.ChannelsFirst).PadSame().Done()
		require.Equal(t, map[string]int{"InputBatch": 0, "OutputBatch": 0, "OutputChannels": 1, "KernelOutputChannels": 0,
			"channelGroupCount": 1, "batchGroupCount": 1}, ConvGeneralParams(y), y.String())

		d := DotGeneral(a, []int{2}, []int{0}, b, []int{1}, []int{0})
		require.Equal(t, map[string][]int{"lhsContractingAxes": {2}, "lhsBatchAxes": {0}, "rhsContractingAxes": {1}, "rhsBatchAxes": {0}},
			DotGeneralAxes(d), d.String())

		return []*Node{y, d}
	}, f32(4, 3, 5, 5), f32(6, 3, 3, 3), f32(2, 3, 4), f32(2, 4, 5))
	require.NoError(t, err)

	// A dense layer as GoMLX's layers build it: on the Go backend, one FusedDense node.
	store := model.NewStore()
	found := false
	exec, err := model.NewExec(backend, store, func(scope *model.Scope, x *Node) *Node {
		y := layers.DenseWithBias(scope.In("dense"), x, 7)
		for _, n := range x.Graph().Nodes() {
			if n.Type() == NodeTypeFusedDense {
				found = true
				noActivation, layout := FusedDenseForm(n)
				require.True(t, noActivation, n.String())
				require.Equal(t, LayoutInputOutputs, layout, n.String())
			}
		}
		return y
	})
	require.NoError(t, err)
	_, err = exec.Exec(f32(2, 4))
	require.NoError(t, err)
	require.True(t, found, "the Go backend's dense layer is a FusedDense node")
}

// TestNoOpViewsBuildNothing pins what views.go works around: GoMLX still builds ZerosLike of a
// scalar, a Reshape to a node's own shape and an identity transpose as ops; ZeroOf, OneOf,
// ReshapeTo and TransposeTo build none (constants are not ops).
func TestNoOpViewsBuildNothing(t *testing.T) {
	backend, err := backends.New("go")
	require.NoError(t, err)
	g := NewGraph(backend, "views")
	x := Parameter(g, "x", shapes.Make(dtypes.Float32, 3, 4))
	s := Parameter(g, "s", shapes.Make(dtypes.Float32))
	ops := func(build func()) (added []NodeType) {
		before := len(g.Nodes())
		build()
		for _, n := range g.Nodes()[before:] {
			if n.Type() != NodeTypeConstant {
				added = append(added, n.Type())
			}
		}
		return
	}
	require.NotEmpty(t, ops(func() { ZerosLike(s) }), "GoMLX's ZerosLike of a scalar no longer builds an op: ZeroOf can go")
	require.NotEmpty(t, ops(func() { Reshape(x, 3, 4) }), "GoMLX's Reshape to the same shape no longer builds an op: ReshapeTo can go")
	require.NotEmpty(t, ops(func() { TransposeAllAxes(x, 0, 1) }), "GoMLX's identity transpose no longer builds an op: TransposeTo can go")
	require.Empty(t, ops(func() { ZeroOf(s); OneOf(x) }))
	require.Empty(t, ops(func() { ReshapeTo(x, 3, 4); TransposeTo(x, 0, 1) }))
	require.Equal(t, []NodeType{NodeTypeReshape}, ops(func() { ReshapeTo(x, 4, 3) }))
	require.Equal(t, []NodeType{NodeTypeTranspose}, ops(func() { TransposeTo(x, 1, 0) }))
}

// TestSharedBuildsOneNodeAKey: the same view of the same node twice is one op, and a graph's
// shared nodes are its own (GoMLX does not merge equal ops when it builds them).
func TestSharedBuildsOneNodeAKey(t *testing.T) {
	backend, err := backends.New("go")
	require.NoError(t, err)
	g, h := NewGraph(backend, "shared"), NewGraph(backend, "other")
	x := Parameter(g, "x", shapes.Make(dtypes.Float32, 3, 4))
	y := Parameter(h, "x", shapes.Make(dtypes.Float32, 3, 4))
	require.NotSame(t, Reshape(x, 4, 3), Reshape(x, 4, 3), "GoMLX merges equal ops now: Shared can go")
	require.Same(t, ReshapeTo(x, 4, 3), ReshapeTo(x, 4, 3))
	require.NotSame(t, ReshapeTo(x, 4, 3), ReshapeTo(x, 2, 6))
	require.Same(t, Positive(x), Positive(x))
	require.NotSame(t, Positive(x), Positive(Neg(x)))
	require.Equal(t, h, ReshapeTo(y, 4, 3).Graph(), "the same key in another graph is that graph's node")
}

// TestHostFedBuffersLeaveThePool pins a cost of the Go backend (compute v0.1.14) that a program
// feeding batches built from Go slices pays every step: the upload takes a buffer from the
// backend's pool and, once the step has used it, drops it instead of returning it, so some op of
// the next step allocates (and page-faults) a fresh buffer of the batch's size. Buffers computed
// on the device go back to the pool. examples/bench feeds through dataset.InMemory, which gathers
// batches on the device, for that reason (docs/backends.md). When this test fails, an upgrade
// returns uploaded buffers to the pool: the note in docs/backends.md can go.
func TestHostFedBuffersLeaveThePool(t *testing.T) {
	backend, err := backends.New("go")
	require.NoError(t, err)
	const rows, cols, steps = 256, 1024, 40
	const batchBytes = rows * cols * 4 // 1 MiB
	sum := MustNewExec(backend, func(x *Node) *Node { return ReduceAllSum(x) })
	onDevice := MustNewExec(backend, func(g *Graph) *Node { return IotaFull(g, shapes.Make(dtypes.Float32, rows, cols)) })
	// allocated runs steps steps on the batches next returns (made before the count starts) and
	// returns the bytes the Go heap handed out meanwhile.
	allocated := func(next func() *tensors.Tensor) uint64 {
		step := func(x *tensors.Tensor) { // as train.Trainer does: the batch is donated to the step
			donated, err := DonateTensorBuffer(x, backend, 0)
			require.NoError(t, err)
			sum.MustCall1(donated).MustFinalizeAll()
		}
		for range 5 { // warm up: compile, fill the pool
			step(next())
		}
		batches := make([]*tensors.Tensor, steps)
		for i := range batches {
			batches[i] = next()
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for _, x := range batches {
			step(x)
		}
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
	data := make([]float32, rows*cols)
	host := allocated(func() *tensors.Tensor { return tensors.FromFlatDataAndDimensions(data, rows, cols) })
	device := allocated(func() *tensors.Tensor { return onDevice.MustCall1() })
	t.Logf("allocated in %d steps of a 1 MiB batch: fed from Go slices %.1f MiB, computed on the device %.1f MiB",
		steps, float64(host)/(1<<20), float64(device)/(1<<20))
	require.Less(t, device, uint64(steps*batchBytes/4), "a batch computed on the device should go back to the pool")
	require.Greater(t, host, uint64(steps*batchBytes/2),
		"the Go backend now returns uploaded buffers to its pool: the note on feeding batches in docs/backends.md can go")
}
