package step

import (
	"fmt"
	"hash/fnv"
	"path"
	"slices"
	"strings"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/support/exceptions"
	"github.com/gradsub/gradsub/hooks/internal/rules"
	"github.com/gradsub/gradsub/internal/upstream"
)

// Coefficient stacks. GoMLX's optimizers update each variable they are given in some 25 ops
// (Adam's moments, its bias correction, the step), each a kernel launch on an accelerator where
// the compiler cannot fuse it. Where the base optimizer updates elementwise
// (upstream.UpdatesElementwise), matrices of one shape, rank and side give it their
// coefficients as one variable, [k, r, n]: the same arithmetic on each element, one update a
// stack. Its state (Adam's moments) is then stacked too, and rotated into the next bases as
// one. A matrix alone keeps its own coefficient variable, as temporal mode's do.
//
// Stored: "/subspace/stacks/coefficients_<key>" (zero between steps), the base optimizer's state
// named after it (Adam's "/AdamOptimizer/subspace/stacks/coefficients_<key>_1st_moment"), and the members' path
// hashes in order ("/subspace/stacks/members_<key>"). A build whose stacks differ from the
// store's (another selection on resume, a rank change, a checkpoint written before stacks)
// splits the stored stacks back into per-variable state and stacks that into its own, on the
// host before the graph reads it; the projector's own coefficient-shaped state (the gradient
// history) stays per variable.

// This state's entries: of the schema (state.go). SvCoefficients names a stack's variable too.
var (
	SvStackMembers = rules.NewStateVar("members", dtypes.Int64, "base step: the path hashes of a coefficient stack's matrices, in order")
)

// StackCoefficients turns the stacks off where false (tests: a checkpoint in the per-variable
// layout of the coefficients' state).
var StackCoefficients = true

// coefStack is the coefficients of matrices the base optimizer steps as one variable.
type coefStack struct {
	key     string
	members []*matrixVar // by path: member i is slice i (its slot)
	v       *model.Variable
}

// stackKey groups the matrices whose coefficients stack: one dtype, shape, rank and side.
func stackKey(m *matrixVar) string {
	return fmt.Sprintf("%s_%dx%d_r%d_%s", m.coefShape.DType, m.m, m.n, m.rank, strings.ToLower(m.side.String()))
}

// PathHash identifies a projected matrix in stored state: FNV-64a of its variable's path (it
// also seeds its start basis and complement draws).
func PathHash(variablePath string) uint64 {
	hash := fnv.New64a()
	hash.Write([]byte(variablePath))
	return hash.Sum64()
}

// coefficientVars makes each matrix's coefficient variable (sorted: the matrices in path order,
// as project gives them): its stack's where matrices share a key and the base optimizer updates
// elementwise, else its own. The store's stacks are lined up with this build's first.
func (st *stepState) coefficientVars(sorted []*matrixVar) {
	var stacks []*coefStack
	if StackCoefficients && upstream.UpdatesElementwise(st.cfg.Base) {
		for _, group := range matrixGroups(sorted, stackKey) {
			if len(group) > 1 {
				stacks = append(stacks, &coefStack{key: stackKey(group[0]), members: group})
			}
		}
	}
	store, root := st.scope.Store(), st.root.Scope()
	pathOf := make(map[int64]string, len(sorted))
	for _, m := range sorted {
		pathOf[int64(m.pathHash)] = m.v.Path()
	}
	// Every stored stack this build does not keep as it is goes back to its matrices'
	// per-variable state first (a matrix may move from one stack to another), then this build's
	// new stacks are made from it.
	for _, key := range stackMembers.keys(store, root) {
		i := slices.IndexFunc(stacks, func(s *coefStack) bool { return s.key == key })
		if i < 0 || !slices.Equal(stackMembers.ids(store, root, key), stacks[i].ids()) {
			unstack(store, root, key, pathOf)
		}
	}
	for _, s := range stacks {
		if stackMembers.ids(store, root, s.key) == nil {
			st.stack(s, s.ids())
		}
	}
	for _, s := range stacks {
		dims := append([]int{len(s.members)}, s.members[0].coefShape.Dimensions...)
		shape := shapes.Make(s.members[0].coefShape.DType, dims...)
		if v := store.GetVariable(stackPath(root, SvCoefficients, s.key)); v != nil && !v.Shape().Equal(shape) {
			deleteIfPresent(store, v.Path()) // damaged: it holds zeros between steps, made anew
		}
		s.v = st.root.At(stacksScope).VariableWithShape(SvCoefficients.Name+"_"+s.key, shape).SetTrainable(false)
		store.GetVariable(stackMembers.path(root, s.key)).SetTrainable(false)
		for i, m := range s.members {
			m.stack, m.slot = s, i
		}
	}
	for _, m := range sorted {
		if m.stack == nil {
			m.coef = st.perVariable(m.v, SvCoefficients, m.coefShape)
		}
	}
}

func (s *coefStack) ids() []int64 {
	ids := make([]int64, len(s.members))
	for i, m := range s.members {
		ids[i] = int64(m.pathHash)
	}
	return ids
}

// stacksScope holds the stacks' variables in the state scope.
const stacksScope = "stacks"

// stackPath is the path of entry e of stack key.
func stackPath(root string, e rules.StateVar, key string) string {
	return path.Join(root, stacksScope, e.Name+"_"+key)
}

// memberLists are the stored lists of path hashes (entry, "<name>_<key>" in scope under the
// state root) that say which variables a stack or a pack holds, in order.
type memberLists struct {
	scope string
	entry rules.StateVar
}

var (
	stackMembers = memberLists{stacksScope, SvStackMembers}
	packMembers  = memberLists{packsScope, SvPackMembers}
)

// path is the path of key's list.
func (l memberLists) path(root, key string) string {
	return path.Join(root, l.scope, l.entry.Name+"_"+key)
}

// ids is key's stored list (nil: none stored, or damaged: the stack or pack restarts).
func (l memberLists) ids(store *model.Store, root, key string) []int64 {
	v := store.GetVariable(l.path(root, key))
	if v == nil {
		return nil
	}
	return storedHashes(v)
}

// keys lists the keys the store holds lists of.
func (l memberLists) keys(store *model.Store, root string) []string {
	prefix := l.entry.Name + "_"
	var keys []string
	for v := range store.IterVariables() {
		if v.Scope() == path.Join(root, l.scope) && strings.HasPrefix(v.Name(), prefix) {
			keys = append(keys, strings.TrimPrefix(v.Name(), prefix))
		}
	}
	return keys
}

// UnstackMatrix splits the stored stack that holds the matrix at variablePath, if any, back
// into per-variable state (the rank rule resizes a matrix's state there); pathOf names the
// matrices by path hash. The next build stacks them again.
func UnstackMatrix(store *model.Store, root, variablePath string, pathOf map[int64]string) {
	id := int64(PathHash(variablePath))
	for _, key := range stackMembers.keys(store, root) {
		if slices.Contains(stackMembers.ids(store, root, key), id) {
			unstack(store, root, key, pathOf)
		}
	}
}

// unstack moves stack key's state into its members' per-variable state (a member pathOf does
// not name is dropped: it is no longer projected) and deletes the stack.
func unstack(store *model.Store, root, key string, pathOf map[int64]string) {
	ids := stackMembers.ids(store, root, key)
	name := SvCoefficients.Name + "_" + key
	for _, sv := range stackState(store, root, key) {
		x := strings.TrimSuffix(sv.Scope(), path.Join(root, stacksScope))
		suffix := strings.TrimPrefix(sv.Name(), name)
		t, err := sv.Value()
		if suffix != "" && err == nil && t.Rank() >= 1 && t.Shape().Dim(0) == len(ids) {
			for i, part := range slicesOf(t) {
				if p, ok := pathOf[ids[i]]; ok {
					scope, coef := model.SplitPath(SvCoefficients.OfVariable(root, p))
					deleteIfPresent(store, path.Join(x, scope, coef+suffix))
					store.Scope(path.Join("/", x, scope)).VariableWithValue(coef+suffix, part).SetTrainable(false)
				}
			}
		}
		deleteIfPresent(store, sv.Path()) // the stack's own variable is zero: made anew
	}
	deleteIfPresent(store, stackMembers.path(root, key))
}

// stack moves the members' per-variable coefficient state (the base optimizer's: a member
// without it starts from zero) into stack s, and records its members.
func (st *stepState) stack(s *coefStack, ids []int64) {
	store, root := st.scope.Store(), st.root.Scope()
	k := len(s.members)
	parts := map[[2]string][]*model.Variable{} // (scope prefix, suffix) → each member's
	var order [][2]string
	for i, m := range s.members {
		scope, coef := model.SplitPath(SvCoefficients.OfVariable(root, m.v.Path()))
		deleteIfPresent(store, path.Join(scope, coef)) // zero between steps
		for sv := range store.IterVariables() {
			x, isState := optimizerStateScope(sv, scope, coef, m.coefShape.Dimensions, root)
			if !isState {
				continue // the projector's own state (the gradient history) stays per variable
			}
			id := [2]string{x, strings.TrimPrefix(sv.Name(), coef)}
			if parts[id] == nil {
				parts[id] = make([]*model.Variable, k)
				order = append(order, id)
			}
			parts[id][i] = sv
		}
	}
	for _, id := range order {
		stacked := stackTensors(parts[id], s.members[0].coefShape.Dimensions)
		for _, sv := range parts[id] {
			if sv != nil {
				deleteIfPresent(store, sv.Path())
			}
		}
		store.Scope(path.Join(id[0], root, stacksScope)).VariableWithValue(SvCoefficients.Name+"_"+s.key+id[1], stacked).SetTrainable(false)
	}
	deleteIfPresent(store, stackMembers.path(root, s.key))
	st.root.At(stacksScope).VariableWithValue(SvStackMembers.Name+"_"+s.key, ids).SetTrainable(false)
}

// stackState is every stored variable of stack key: its coefficients and the state named after
// them (namedState).
func stackState(store *model.Store, root, key string) []*model.Variable {
	return namedState(store, path.Join(root, stacksScope), SvCoefficients.Name+"_"+key)
}

// slicesOf splits t ([k, …]) along axis 0.
func slicesOf(t *tensors.Tensor) []*tensors.Tensor {
	k := t.Shape().Dim(0)
	part := shapes.Make(t.DType(), t.Shape().Dimensions[1:]...)
	size := part.Memory()
	out := make([]*tensors.Tensor, k)
	t.ConstBytes(func(data []byte) {
		for i := range out {
			out[i] = tensors.FromShape(part)
			out[i].MutableBytes(func(dst []byte) { copy(dst, data[uintptr(i)*size:uintptr(i+1)*size]) })
		}
	})
	return out
}

// stackTensors stacks the values of vars ([dims] each; nil: zeros) along a new axis 0.
func stackTensors(vars []*model.Variable, dims []int) *tensors.Tensor {
	var dtype dtypes.DType
	for _, v := range vars {
		if v != nil {
			dtype = v.DType()
		}
	}
	part := shapes.Make(dtype, dims...)
	size := part.Memory()
	out := tensors.FromShape(shapes.Make(dtype, append([]int{len(vars)}, dims...)...))
	out.MutableBytes(func(dst []byte) {
		for i, v := range vars {
			if v == nil {
				continue
			}
			t, err := v.Value()
			if err != nil || !t.Shape().Equal(part) {
				exceptions.Panicf("hooks.Subspace: stacking %s: %v (it is %s, want %s)", v.Path(), err, v.Shape(), part)
			}
			t.ConstBytes(func(src []byte) { copy(dst[uintptr(i)*size:], src) })
		}
	})
	return out
}

func deleteIfPresent(store *model.Store, p string) {
	if store.GetVariable(p) == nil {
		return
	}
	if err := store.DeleteVariable(p); err != nil {
		exceptions.Panicf("hooks.Subspace: moving the coefficients' state: %v", err)
	}
}

// stackStateInGraph is the state the base optimizer keeps for stack s in this graph (its
// moments), stacked as the coefficients.
func (st *stepState) stackStateInGraph(s *coefStack) []*model.Variable {
	return st.stateInGraph(s.v.Scope(), s.v.Name(), s.v.Shape())
}

// stackRotation is the members' rotations into their next bases, [k, r, r], in slot order: the
// tracked batch's where the stack is all of it, else gathered from it or stacked.
func (s *coefStack) rotation(g *Graph) *Node {
	b := s.members[0].batch
	at := make([][]int32, len(s.members))
	for i, m := range s.members {
		if b == nil || m.batch != b {
			b = nil
			break
		}
		at[i] = []int32{int32(slices.Index(b.members, m))}
	}
	if b != nil {
		if len(b.members) == len(s.members) && slices.Equal(b.members, s.members) {
			return b.rotation
		}
		return Gather(b.rotation, Const(g, at), true)
	}
	rs := make([]*Node, len(s.members))
	for i, m := range s.members {
		rs[i] = m.rotationNode()
	}
	return stacked(rs)
}
