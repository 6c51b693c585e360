// Package upstream holds the project's workarounds for limits of GoMLX (v0.28.16), its compute
// backends (compute v0.1.14) and go-xla (v0.4.13): what the rest of the code would otherwise
// reach with reflection, unsafe or by parsing a node's description. Each is pinned by a test that
// fails when the upstream version changes what it relies on; review this table when upgrading.
//
//	| limit upstream                                                    | here                      | pinned by                                   |
//	|-------------------------------------------------------------------|---------------------------|---------------------------------------------|
//	| scalar constants cached per graph, not per function (gomlx)       | IsolateFunctionCaches     | TestIsolateMap, projector's closure tests   |
//	| go-xla's Builder caches reduction, arg-min/max and selection      | IsolateFunctionCaches     | TestXLABuilderCachesAreFound                |
//	|   functions for the whole computation, parented on one function   |                           |                                             |
//	| DotGeneral's axes only visible in Node.String() (gomlx)           | DotGeneralAxes            | TestDescriptionsParse                       |
//	| ConvGeneral's axes and group counts only in Node.String()         | ConvGeneralParams         | TestDescriptionsParse                       |
//	| FusedDense's activation and weight layout only in Node.String()   | FusedDenseForm            | TestDescriptionsParse                       |
//	| ZerosLike/OnesLike, a Reshape to the same shape and an identity   | ZeroOf, OneOf, ReshapeTo, | TestNoOpViewsBuildNothing                   |
//	|   transpose are built as ops (the Go backend copies the latter)   |   TransposeTo (views.go)  |                                             |
//	| the Go backend drops an uploaded batch's pooled buffer after the  | examples/bench feeds from | TestHostFedBuffersLeaveThePool              |
//	|   step: every step allocates and page-faults a fresh one          |   dataset.InMemory        |                                             |
//	| the trainer counts AccumulateGradients' micro-batches on the host: | docs/backends.md: resume  | TestTrainerDoesNotCheckpointItsMicroBatch-  |
//	|   a resume inside a window is not exact (stock's either)          |   at a window boundary    |   Count                                     |
//	| checkpoint.Handler.Save writes in place; a kill during a save      | hooks.SetAsideUnreadable- | TestCheckpointSaveWritesInPlace,            |
//	|   leaves the newest truncated, and loading fails on it            |   Checkpoints             |   hooks' TestKilledSaveLeavesALoadable…     |
//	| the Go backend has no BatchNormForTraining: norm.BatchNorm fails   | docs/backends.md: a layer | TestGoBackendHasNoBatchNormForTraining      |
//	|   in training (cifar's CNN by default)                            |   norm instead            |                                             |
//	| the fused MultiHeadAttention fails when the value head's size      | docs/backends.md:         | TestFusedAttentionNeedsEqualKeyAndValue-    |
//	|   differs from the key's (WithValueHeadDim)                       |   WithFusion(false)       |   Heads                                     |
//	| an optimizer keeps a variable's state unlisted, found by name,     | IsStateOf, LearningRate   | TestOptimizerStateNaming                    |
//	|   scope and shape ("<name>_1st_moment", "<name>_2nd_moment")      |   (optimizers.go)         |                                             |
//
// Three more live where they act, listed here so that the table is complete:
//
//   - VJPs can be replaced only through the global graph.VJPRegistration map: hooks/internal/direct/vjp.go wraps
//     FusedDense's, DotGeneral's and ConvGeneral's once at start-up, for nodes marked direct only
//     (TestDirectPathBuildsNoWeightGradient, TestConvNetKernelsTakeTheDirectPath).
//   - A base optimizer pairs gradients with the trainable variables it finds in the scope:
//     hooks' baseAdapter (base.go) flips Trainable flags for the duration of the call (TestCheckpointResumesExactly).
//   - The Go backend's product kernels are slow for a small operand contracted on its last axis,
//     for row counts that are not a multiple of 4 and for few output columns, and its Where runs a
//     general loop for a condition that broadcasts: projector's TimesSmallTransposed,
//     TransposedTimes, SketchColumns, directCoefficients and DirectTrackingProducts lay products
//     out for them, and TrackBasis zeroes a rate instead of selecting (docs/log/2026-12-benchmarks.md).
package upstream

import (
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"unsafe"

	. "github.com/gomlx/gomlx/core/graph"
)

// IsolateFunctionCaches empties the graph-wide caches that would hand one function's nodes to
// another — GoMLX's scalar and tensor-constant caches, go-xla's builder caches of reduction,
// arg-min/max and selection functions — and returns the function that restores them. Build a
// closure between the two calls: its constants and reductions are then its own.
func IsolateFunctionCaches(g *Graph) (restore func()) {
	var restores []func()
	restores = append(restores, isolateMap(reflect.ValueOf(g).Elem().FieldByName("scalars")))
	restores = append(restores, isolateMap(reflect.ValueOf(g).Elem().FieldByName("tensorConstants")))
	for _, cache := range xlaBuilderCaches(g) {
		restores = append(restores, isolateMap(cache))
	}
	return func() {
		for i := len(restores) - 1; i >= 0; i-- {
			restores[i]()
		}
	}
}

// isolateMap empties the map in field (an unexported field, reached through unsafe) and returns
// the function that puts its entries back. An invalid field (another library version that keeps
// no such cache) is left alone.
func isolateMap(field reflect.Value) (restore func()) {
	if !field.IsValid() || field.Kind() != reflect.Map || !field.CanAddr() {
		return func() {}
	}
	field = reflect.NewAt(field.Type(), unsafe.Pointer(field.UnsafeAddr())).Elem()
	saved := field.Interface()
	field.Set(reflect.MakeMap(field.Type()))
	return func() { field.Set(reflect.ValueOf(saved)) }
}

// xlaCacheFields name the caches of go-xla's Builder (compute/xla) that hold functions.
var xlaCacheFields = []string{"cacheReductions", "cacheArgMinMax", "cacheSelections"}

// xlaBuilderCaches are the fields of go-xla's builder for g that cache functions (reductions,
// arg-min/max, selections) across the whole computation; none on other backends.
func xlaBuilderCaches(g *Graph) []reflect.Value {
	builder := reflect.ValueOf(g).Elem().FieldByName("builder")
	for builder.IsValid() && (builder.Kind() == reflect.Interface || builder.Kind() == reflect.Pointer) {
		if builder.IsNil() {
			return nil
		}
		builder = builder.Elem()
	}
	if !builder.IsValid() || builder.Kind() != reflect.Struct {
		return nil
	}
	var caches []reflect.Value
	for _, name := range xlaCacheFields {
		if f := builder.FieldByName(name); f.IsValid() {
			caches = append(caches, f)
		}
	}
	return caches
}

var dotAxesRE = regexp.MustCompile(`(lhsContractingAxes|lhsBatchAxes|rhsContractingAxes|rhsBatchAxes)=\[([0-9 ]*)\]`)

// DotGeneralAxes reads a DotGeneral node's axes from its description: "lhsContractingAxes",
// "lhsBatchAxes", "rhsContractingAxes", "rhsBatchAxes".
func DotGeneralAxes(node *Node) map[string][]int {
	axes := map[string][]int{}
	for _, m := range dotAxesRE.FindAllStringSubmatch(node.String(), -1) {
		var list []int
		for _, f := range strings.Fields(m[2]) {
			v, _ := strconv.Atoi(f)
			list = append(list, v)
		}
		axes[m[1]] = list
	}
	return axes
}

var (
	convAxisRE  = regexp.MustCompile(`\b(InputBatch|OutputBatch|OutputChannels|KernelOutputChannels):(\d+)`)
	convGroupRE = regexp.MustCompile(`\b(channelGroupCount|batchGroupCount)=(\d+)`)
)

// ConvGeneralParams reads a ConvGeneral node's axes and group counts from its description:
// "InputBatch", "OutputBatch", "OutputChannels", "KernelOutputChannels", "channelGroupCount",
// "batchGroupCount" (a missing key: an unknown description format).
func ConvGeneralParams(node *Node) map[string]int {
	params := map[string]int{}
	desc := node.String()
	for _, re := range []*regexp.Regexp{convAxisRE, convGroupRE} {
		for _, m := range re.FindAllStringSubmatch(desc, -1) {
			v, _ := strconv.Atoi(m[2])
			params[m[1]] = v
		}
	}
	return params
}

// Weight layouts of a FusedDense node.
const (
	LayoutInputOutputs = "InputOutputs" // W [in, out…]
	LayoutOutputsInput = "OutputsInput" // W [out…, in]
)

// FusedDenseForm reads from a FusedDense node's description whether it fuses no activation, and
// its weight layout (LayoutInputOutputs, LayoutOutputsInput, or "" if unknown).
func FusedDenseForm(node *Node) (noActivation bool, layout string) {
	desc := node.String()
	noActivation = strings.Contains(desc, "Activation:{Type:None}")
	for _, l := range []string{LayoutInputOutputs, LayoutOutputsInput} {
		if strings.Contains(desc, "WeightLayout:"+l) {
			layout = l
		}
	}
	return
}
