package step

import (
	"path"
	"slices"
	"strings"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/support/exceptions"
	"github.com/gradsub/gradsub/hooks/internal/rules"
)

// The packs' layout in the store (packs.go), moved on the host before a graph reads it.

// packPath is the path of entry e of pack key.
func packPath(root string, e rules.StateVar, key string) string {
	return path.Join(root, packsScope, e.Name+"_"+key)
}

// UnpackAll splits every stored pack back into its variables' own state: the base optimizer
// run alone (the projector disabled) finds its state where it keeps it.
func UnpackAll(store *model.Store, root string) {
	for _, key := range packMembers.keys(store, root) {
		unpack(store, root, key)
	}
}

// packState is every stored variable of pack key: the stand-in and the state named after it
// (namedState).
func packState(store *model.Store, root, key string) []*model.Variable {
	return namedState(store, path.Join(root, packsScope), SvPackValues.Name+"_"+key)
}

// unpack moves pack key's state into its members' own state, named as the base optimizer names
// it, and deletes the pack. A member the store no longer holds cannot be sized: the pack's state
// is then dropped, and its members' state restarts from zero, as after Optimizer.Clear.
func unpack(store *model.Store, root, key string) {
	ids := packMembers.ids(store, root, key)
	byHash := make(map[int64]*model.Variable, len(ids))
	for v := range store.IterVariables() {
		if slices.Contains(ids, int64(PathHash(v.Path()))) {
			byHash[int64(PathHash(v.Path()))] = v
		}
	}
	members, total := make([]*model.Variable, len(ids)), 0
	for i, id := range ids {
		if members[i] = byHash[id]; members[i] == nil {
			total = -1
			break
		}
		total += members[i].Shape().Size()
	}
	name := SvPackValues.Name + "_" + key
	for _, sv := range packState(store, root, key) {
		x := strings.TrimSuffix(sv.Scope(), path.Join(root, packsScope))
		suffix := strings.TrimPrefix(sv.Name(), name)
		t, err := sv.Value()
		if suffix != "" && total >= 0 && err == nil && t.Rank() == 1 && t.Shape().Dim(0) == total {
			offset := 0
			for _, v := range members {
				part := tensors.FromShape(shapes.Make(t.DType(), v.Shape().Dimensions...))
				size := int(part.Shape().Memory())
				t.ConstBytes(func(data []byte) {
					part.MutableBytes(func(dst []byte) { copy(dst, data[offset:offset+size]) })
				})
				offset += size
				deleteIfPresent(store, path.Join(x, v.Scope(), v.Name()+suffix))
				store.Scope(path.Join("/", x, v.Scope())).VariableWithValue(v.Name()+suffix, part).SetTrainable(false)
			}
		}
		deleteIfPresent(store, sv.Path())
	}
	deleteIfPresent(store, packMembers.path(root, key))
}

// pack moves the members' own state (the base optimizer's, found by its naming rule: a member
// without it starts from zero) into pack p, and records its members.
func (st *stepState) pack(p *varPack) {
	store, root := st.scope.Store(), st.root.Scope()
	for _, sv := range packState(store, root, p.key) {
		deleteIfPresent(store, sv.Path()) // left by a Clear of the projector's state alone
	}
	parts := map[[2]string][]*model.Variable{} // (scope prefix, suffix) → each member's
	var order [][2]string
	for i, v := range p.members {
		for sv := range store.IterVariables() {
			x, ok := optimizerStateScope(sv, v.Scope(), v.Name(), v.Shape().Dimensions, root)
			if !ok || sv == v || sv.InUseByGraph(st.g) { // the model's variables are read by now, state not yet
				continue
			}
			id := [2]string{x, strings.TrimPrefix(sv.Name(), v.Name())}
			if parts[id] == nil {
				parts[id] = make([]*model.Variable, len(p.members))
				order = append(order, id)
			}
			parts[id][i] = sv
		}
	}
	for _, id := range order {
		packedState := concatTensors(parts[id], p.offsets)
		for _, sv := range parts[id] {
			if sv != nil {
				deleteIfPresent(store, sv.Path())
			}
		}
		store.Scope(path.Join(id[0], root, packsScope)).VariableWithValue(SvPackValues.Name+"_"+p.key+id[1], packedState).SetTrainable(false)
	}
	deleteIfPresent(store, packMembers.path(root, p.key))
	st.root.At(packsScope).VariableWithValue(SvPackMembers.Name+"_"+p.key, p.ids()).SetTrainable(false)
}

// concatTensors is the values of vars (nil: zeros), flattened and concatenated: member i at
// [offsets[i], offsets[i+1]).
func concatTensors(vars []*model.Variable, offsets []int) *tensors.Tensor {
	var dtype dtypes.DType
	for _, v := range vars {
		if v != nil {
			dtype = v.DType()
		}
	}
	out := tensors.FromShape(shapes.Make(dtype, offsets[len(vars)]))
	elem := int(dtype.Size())
	out.MutableBytes(func(dst []byte) {
		for i, v := range vars {
			if v == nil {
				continue
			}
			t, err := v.Value()
			if err != nil || t.DType() != dtype || t.Shape().Size() != offsets[i+1]-offsets[i] {
				exceptions.Panicf("hooks.Subspace: packing %s: %v (it is %s, want %d values of %s)", v.Path(), err, v.Shape(), offsets[i+1]-offsets[i], dtype)
			}
			t.ConstBytes(func(src []byte) { copy(dst[offsets[i]*elem:], src) })
		}
	})
	return out
}
