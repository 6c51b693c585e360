package step

import (
	"slices"
	"strings"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/model/initializer"
	"github.com/gomlx/gomlx/support/exceptions"
	"github.com/gradsub/gradsub/hooks/internal/rules"
)

// Matrix mode keeps each projected matrix's scalar state (its basis's validity and residual, the
// residual rule's fresh residual, the complement's last length, the step-length factor, the rank
// rule's streaks) as one stored vector per entry over the matrices, in the order of their paths
// ("/subspace/matrices_residual"): the rules read, write, guard and repair a vector, a few ops
// an entry, where a scalar variable per matrix cost a stack, a slice, a restore and a repair
// each (an op the compiler cannot fuse is a kernel launch on an accelerator). Temporal mode
// keeps per-variable scalars.
//
// SvMatrices records which matrix each position holds (its path hash, matrixVar.pathHash). A build whose matrices differ (another
// selection on resume) moves each matrix's values to its new position on the host; one that
// finds a checkpoint written with per-variable scalars takes their values and deletes them.

// This state's entry: of the schema (state.go).
var (
	SvMatrices = rules.NewStateVar("matrices", dtypes.Int64, "matrix scalars: the path hash of the matrix at each position of the per-matrix vectors")
)

// matrixScalars is this build's view of the vectors: the matrices, in vector order.
type matrixScalars struct {
	st      *stepState
	members []*matrixVar // in vector order (by path); each one's position is its at

	valid, residual *model.Variable // each basis's (matrix.go)
	compLen         *model.Variable // the complement's last step lengths (matrix.go; nil: no complement)
}

// newMatrixScalars numbers the matrices (sorted: in path order, as project gives them; each
// one's at), and lines up the stored vectors with them.
func newMatrixScalars(st *stepState, sorted []*matrixVar) *matrixScalars {
	for i, m := range sorted {
		m.at = i
	}
	s := &matrixScalars{st: st, members: sorted}
	s.lineUp()
	return s
}

// lineUp makes the stored vectors follow this build's matrices: where SvMatrices records
// another order or set, each vector of the store moves its values to their matrices' new
// positions (zero for a matrix new to it), on the host, before the graph reads them.
func (s *matrixScalars) lineUp() {
	store, root := s.st.scope.Store(), s.st.root.Scope()
	ids := make([]int64, len(s.members))
	for i, m := range s.members {
		ids[i] = int64(m.pathHash)
	}
	idsPath := SvMatrices.Of(root)
	stored := store.GetVariable(idsPath)
	if stored != nil {
		old := storedHashes(stored)
		if slices.Equal(old, ids) {
			stored.SetTrainable(false) // checkpoints don't keep the flag
			return
		}
		position := make(map[int64]int, len(old))
		for i, id := range old {
			position[id] = i
		}
		var vectors []*model.Variable // collected first: remap replaces variables in the store
		for v := range store.IterVariables() {
			if v.Path() != idsPath && isMatrixVector(root, v) {
				vectors = append(vectors, v)
			}
		}
		for _, v := range vectors {
			s.remap(v, position, ids)
		}
		if err := store.DeleteVariable(idsPath); err != nil {
			exceptions.Panicf("hooks.Subspace: lining up the per-matrix state: %v", err)
		}
	}
	s.st.root.VariableWithValue(SvMatrices.Name, ids).SetTrainable(false)
}

// storedHashes is the path hashes a stored identity vector holds (SvMatrices, a stack's
// members); none (an empty list) where it is damaged.
func storedHashes(v *model.Variable) []int64 {
	t, err := v.Value()
	if err != nil || t.DType() != dtypes.Int64 || t.Rank() != 1 {
		return []int64{}
	}
	return tensors.MustCopyFlatData[int64](t)
}

// isMatrixVector says whether v is one of the per-matrix vectors under root.
func isMatrixVector(root string, v *model.Variable) bool {
	scope, name := model.SplitPath(v.Path())
	return scope == root && strings.HasPrefix(name, rules.MatricesPrefix) && v.Shape().Rank() == 1
}

// remap rewrites vector v, laid out by position (a matrix's id → its old index), for ids.
func (s *matrixScalars) remap(v *model.Variable, position map[int64]int, ids []int64) {
	t, err := v.Value()
	if err != nil {
		exceptions.Panicf("hooks.Subspace: reading %s to line it up with the matrices: %v", v.Path(), err)
	}
	old := vectorValues(t)
	values := make([]float64, len(ids))
	for i, id := range ids {
		if j, ok := position[id]; ok && j < len(old) {
			values[i] = old[j]
		}
	}
	store := s.st.scope.Store()
	dtype := v.DType()
	if err := store.DeleteVariable(v.Path()); err != nil {
		exceptions.Panicf("hooks.Subspace: lining up %s: %v", v.Path(), err)
	}
	scopePath, name := model.SplitPath(v.Path())
	store.Scope(scopePath).VariableWithValue(name, vectorTensor(dtype, values)).SetTrainable(false)
}

// vector returns entry e's stored vector over the matrices, of dtype. Made anew, it takes the
// values a checkpoint written with per-variable scalars holds for e (deleting them), else zeros.
func (s *matrixScalars) vector(e rules.StateVar, dtype dtypes.DType) *model.Variable {
	if e.DType != dtypes.InvalidDType {
		dtype = e.DType
	}
	if dtype.IsHalfPrecision() {
		dtype = dtypes.Float32 // holds a half-precision value exactly
	}
	store, root := s.st.scope.Store(), s.st.root.Scope()
	full := e.OfMatrices(root)
	scopePath, name := model.SplitPath(full)
	if v := store.GetVariable(full); v != nil {
		if want := shapes.Make(dtype, len(s.members)); !v.Shape().Equal(want) {
			exceptions.Panicf("hooks.Subspace: the store's %s is damaged (from a checkpoint): it is %s where the projector keeps %s. "+
				"Delete the projector's state (Optimizer.Clear) to learn new bases, or restore the checkpoint", full, v.Shape(), want)
		}
		return v.SetTrainable(false)
	}
	values, found := make([]float64, len(s.members)), false
	for i, m := range s.members {
		old := store.GetVariable(e.OfVariable(root, m.v.Path()))
		if old == nil {
			continue
		}
		if t, err := old.Value(); err == nil && t.Shape().Size() == 1 {
			values[i], found = vectorValues(t)[0], true
		}
		if err := store.DeleteVariable(old.Path()); err != nil {
			exceptions.Panicf("hooks.Subspace: moving %s into %s: %v", old.Path(), full, err)
		}
	}
	if found {
		return store.Scope(scopePath).VariableWithValue(name, vectorTensor(dtype, values)).SetTrainable(false)
	}
	return store.Scope(scopePath).WithInitializer(initializer.Zero).VariableWithShape(name, shapes.Make(dtype, len(s.members))).SetTrainable(false)
}

// read is v's values at the members' positions, in their order.
func (s *matrixScalars) read(v *model.Variable, members []*matrixVar) *Node {
	all := v.NodeValue(s.st.g)
	if s.inOrder(members) {
		return all
	}
	return Gather(all, s.indices(members), true)
}

// write sets v's values at the members' positions to values (a vector in their order).
func (s *matrixScalars) write(v *model.Variable, members []*matrixVar, values *Node) {
	g := s.st.g
	values = ConvertDType(values, v.DType())
	if s.inOrder(members) {
		v.SetNodeValue(values)
		return
	}
	k := len(s.members)
	if len(members) == k { // every matrix, in another order: one gather puts them in vector order
		from := make([][]int32, k)
		for j, m := range members {
			from[m.at] = []int32{int32(j)}
		}
		v.SetNodeValue(Gather(values, Const(g, from)))
		return
	}
	// One gather from the old values followed by the new: position i reads its new value where
	// a member holds it, its old one elsewhere.
	from := make([][]int32, k)
	for i := range from {
		from[i] = []int32{int32(i)}
	}
	for j, m := range members {
		from[m.at] = []int32{int32(k + j)}
	}
	v.SetNodeValue(Gather(Concatenate([]*Node{v.NodeValue(g), values}, 0), Const(g, from)))
}

// inOrder says whether members are all the matrices, in vector order.
func (s *matrixScalars) inOrder(members []*matrixVar) bool {
	if len(members) != len(s.members) {
		return false
	}
	for i, m := range members {
		if m.at != i {
			return false
		}
	}
	return true
}

// indices are the members' positions, as Gather takes them ([k, 1]).
func (s *matrixScalars) indices(members []*matrixVar) *Node {
	idx := make([][]int32, len(members))
	for i, m := range members {
		idx[i] = []int32{int32(m.at)}
	}
	return Const(s.st.g, idx)
}

// vectorValues is t's values as float64 (exact for the dtypes the vectors use).
func vectorValues(t *tensors.Tensor) []float64 {
	switch t.DType() {
	case dtypes.Float32:
		return converted[float32, float64](tensors.MustCopyFlatData[float32](t))
	case dtypes.Int32:
		return converted[int32, float64](tensors.MustCopyFlatData[int32](t))
	case dtypes.Int64:
		return converted[int64, float64](tensors.MustCopyFlatData[int64](t))
	case dtypes.Float64:
		return tensors.MustCopyFlatData[float64](t)
	}
	return make([]float64, t.Shape().Size()) // no vector's dtype: an older half-precision scalar restarts at zero
}

// vectorTensor is values as a vector of dtype.
func vectorTensor(dtype dtypes.DType, values []float64) *tensors.Tensor {
	switch dtype {
	case dtypes.Float32:
		return tensors.FromValue(converted[float64, float32](values))
	case dtypes.Int32:
		return tensors.FromValue(converted[float64, int32](values))
	case dtypes.Int64:
		return tensors.FromValue(converted[float64, int64](values))
	}
	return tensors.FromValue(values)
}

// converted is xs converted element by element.
func converted[From, To int32 | int64 | float32 | float64](xs []From) []To {
	out := make([]To, len(xs))
	for i, x := range xs {
		out[i] = To(x)
	}
	return out
}

// ZeroMatrixEntry sets position i of entry e's per-matrix vector to zero, on the host (the rank
// rule's host part restarts a resized matrix's streaks); nothing where the store keeps no such
// vector.
func ZeroMatrixEntry(store *model.Store, root string, e rules.StateVar, i int) error {
	v := store.GetVariable(e.OfMatrices(root))
	if v == nil {
		return nil
	}
	t, err := v.Value()
	if err != nil {
		return err
	}
	values := vectorValues(t)
	if i < 0 || i >= len(values) {
		return nil
	}
	values[i] = 0
	return v.SetValue(vectorTensor(v.DType(), values))
}
