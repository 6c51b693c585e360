package step

import (
	"slices"
	"strings"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/model/initializer"
	"github.com/gradsub/gradsub/hooks/internal/rules"
	"github.com/gradsub/gradsub/internal/upstream"
)

// Packs. The variables the projector leaves alone are stepped by the base optimizer as stock
// steps them: some 20 ops each for GoMLX's Adam, and a restore each for the guard and for each
// of its moments. A transformer has many small ones (biases, normalisation gains and offsets),
// whose updates are all launch and no work on an accelerator. Where the base optimizer updates
// elementwise (upstream.UpdatesElementwise), the small ones of a dtype are handed to it as one
// vector: their values and gradients flattened and concatenated, one update, one restore, and a
// slice each back. Values are the same to the bit (the same arithmetic on each element).
//
// Stored: "/subspace/packs/packed_values_<dtype>" (the stand-in the base optimizer updates:
// never written, it holds zeros), its state named after it (Adam's
// "/AdamOptimizer/subspace/packs/packed_values_<dtype>_1st_moment", the members' state
// concatenated in order), and the members' path hashes in order
// ("/subspace/packs/packed_members_<dtype>"). A build whose packs differ from the store's (other
// variables projected, a checkpoint written before packs) splits the stored packs back into
// each variable's own state first, on the host, as stacks.go does the coefficients'; so does a
// build with the projector disabled (UnpackAll), which runs the base optimizer as stock.

// This state's entries: of the schema (state.go).
var (
	SvPackValues  = rules.NewStateVar("packed_values", 0, "base step: the stand-in the base optimizer updates for a pack of small unprojected variables (zeros: never written)")
	SvPackMembers = rules.NewStateVar("packed_members", dtypes.Int64, "base step: the path hashes of a pack's variables, in order")
)

// PackVariables turns the packs off where false (tests: a checkpoint in the per-variable layout).
var PackVariables = true

// PackedSizeLimit is the largest variable (in elements) that joins a pack: small enough that its
// copies into and out of the pack cost less than the launches they save.
const PackedSizeLimit = 1 << 14

// packsScope holds the packs' variables in the state scope.
const packsScope = "packs"

// varPack is the small unprojected variables of one dtype, stepped as one vector.
type varPack struct {
	key     string            // the members' dtype
	members []*model.Variable // by path
	offsets []int             // member i is [offsets[i], offsets[i+1]) of the vector
	v       *model.Variable   // the stand-in, [total]
	param   *Node             // v's parameter node: v is left as it was read, so never written
	before  *Node             // the members' values, concatenated
}

// packed is the vector of xs (one per member), flattened and concatenated.
func (p *varPack) packed(xs []*Node) *Node {
	flats := make([]*Node, len(xs))
	for i, x := range xs {
		flats[i] = flat(x)
	}
	return Concatenate(flats, 0)
}

// packsFor lays out the packs of vars (the unprojected trainables) and lines the store's up
// with them: the small variables of a dtype, two or more, sorted by path.
func (st *stepState) packsFor(vars []*model.Variable) []*varPack {
	store, root := st.scope.Store(), st.root.Scope()
	byKey := map[string][]*model.Variable{}
	for _, v := range vars {
		if v.Shape().Size() <= PackedSizeLimit {
			byKey[v.DType().String()] = append(byKey[v.DType().String()], v)
		}
	}
	var packs []*varPack
	for key, members := range byKey {
		if len(members) < 2 {
			continue
		}
		slices.SortFunc(members, func(a, b *model.Variable) int { return strings.Compare(a.Path(), b.Path()) })
		p := &varPack{key: key, members: members, offsets: []int{0}}
		for _, v := range members {
			p.offsets = append(p.offsets, p.offsets[len(p.offsets)-1]+v.Shape().Size())
		}
		packs = append(packs, p)
	}
	slices.SortFunc(packs, func(a, b *varPack) int { return strings.Compare(a.key, b.key) })
	for _, key := range packMembers.keys(store, root) {
		i := slices.IndexFunc(packs, func(p *varPack) bool { return p.key == key })
		if i < 0 || !slices.Equal(packMembers.ids(store, root, key), packs[i].ids()) {
			unpack(store, root, key)
		}
	}
	for _, p := range packs {
		if packMembers.ids(store, root, p.key) == nil {
			st.pack(p)
		}
		shape := shapes.Make(p.members[0].DType(), p.offsets[len(p.members)])
		if v := store.GetVariable(packPath(root, SvPackValues, p.key)); v != nil && !v.Shape().Equal(shape) {
			deleteIfPresent(store, v.Path()) // damaged: it holds zeros, made anew
		}
		p.v = st.root.At(packsScope).WithInitializer(initializer.Zero).VariableWithShape(SvPackValues.Name+"_"+p.key, shape).SetTrainable(false)
		store.GetVariable(packMembers.path(root, p.key)).SetTrainable(false)
	}
	return packs
}

func (p *varPack) ids() []int64 {
	ids := make([]int64, len(p.members))
	for i, v := range p.members {
		ids[i] = int64(PathHash(v.Path()))
	}
	return ids
}

// packIn hands the base optimizer each pack in its members' place: the pack trainable, valued
// as its members concatenated, the members not.
func (a *baseAdapter) packIn(trainables []*model.Variable) {
	if !PackVariables || !upstream.UpdatesElementwise(a.st.cfg.Base) {
		UnpackAll(a.st.scope.Store(), a.st.root.Scope()) // written by a build that packed
		return
	}
	var alone []*model.Variable
	for _, v := range trainables {
		if _, projected := a.byVar[v]; !projected {
			alone = append(alone, v)
		}
	}
	g := a.st.g
	a.packs = a.st.packsFor(alone)
	a.byPack = make(map[*model.Variable]*varPack, len(a.packs))
	for _, p := range a.packs {
		values := make([]*Node, len(p.members))
		for i, v := range p.members {
			values[i] = v.NodeValue(g)
			v.SetTrainable(false)
		}
		p.before = p.packed(values)
		p.param = p.v.NodeValue(g)
		p.v.SetNodeValue(p.before)
		p.v.SetTrainable(true)
		a.byPack[p.v] = p
	}
}

// packGradient is the gradient the base optimizer is given for a pack's stand-in v: its
// members' gradients (gradOf), packed; false where v is no stand-in.
func (a *baseAdapter) packGradient(v *model.Variable, gradOf map[*model.Variable]*Node) (*Node, bool) {
	p, ok := a.byPack[v]
	if !ok {
		return nil, false
	}
	grads := make([]*Node, len(p.members))
	for i, m := range p.members {
		grads[i] = gradOf[m]
	}
	return p.packed(grads), true
}

// packsBack undoes packIn's flags (packOut does too: this is for an update that panics).
func (a *baseAdapter) packsBack() {
	for _, p := range a.packs {
		p.v.SetTrainable(false)
		for _, v := range p.members {
			v.SetTrainable(true)
		}
	}
}

// packOut gives each pack's members their stepped values, or their values before where the
// step is not taken (ok false), and tells the guard they need no restore.
//
// A non-finite value in a pack's state (Adam's moments) comes only from a damaged checkpoint,
// and would poison its variable for good (NaN), or freeze it (an infinite second moment): where
// the stepped value or a second moment is not finite, the element keeps its value and its state
// restarts from zero, as a stack's member's does. Finite state steps as stock.
func (a *baseAdapter) packOut(ok *Node, guard *stepGuard) {
	g := a.st.g
	for _, p := range a.packs {
		stepped := p.v.NodeValue(g)
		state := a.st.stateInGraph(p.v.Scope(), p.v.Name(), p.v.Shape())
		finite := IsFinite(stepped)
		for _, sv := range state {
			if upstream.IsSecondMoment(sv) {
				finite = LogicalAnd(finite, IsFinite(sv.NodeValue(g)))
			}
		}
		for _, sv := range state {
			x := sv.NodeValue(g)
			sv.SetNodeValue(Where(finite, x, upstream.ZeroOf(x)))
		}
		stepped = Where(LogicalAnd(ok, finite), stepped, p.before)
		p.v.SetNodeValue(p.param)
		p.v.SetTrainable(false)
		for i, v := range p.members {
			part := Slice(stepped, AxisRange(p.offsets[i], p.offsets[i+1]))
			if v.Shape().Rank() != 1 {
				part = Reshape(part, v.Shape().Dimensions...)
			}
			v.SetNodeValue(part)
			v.SetTrainable(true)
			guard.guarded[v] = true
		}
	}
}
