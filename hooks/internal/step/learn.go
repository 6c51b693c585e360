package step

import (
	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gradsub/gradsub/hooks/internal/rules"
	"github.com/gradsub/gradsub/projector"
)

// This rule's state: entries of the schema (state.go).
var (
	SvFastUntil = rules.NewStateVar("fast_tracking_until", dtypes.Int64, "tracking: the last step of the current burst of fast tracking")
)

// TrackEachAlone turns the batching of same-shaped matrices off (tracking, the rotation of their
// state, the complement's sizing): for the tests that compare the batched step with the step of
// each matrix alone.
var TrackEachAlone = false

// learnAll applies the step's learning: tracked (matrix) bases move at rate (scalar, at most
// maxRate), those of one shape stacked into one batch of products, and each takes its next basis
// (tracked); a refresh (learnNow) is a burst of fast tracking, set by the rate, not a branch.
// Temporal ones re-learn where learnNow (scalar bool).
func (st *stepState) learnAll(hs []handler, learnNow, rate, ok *Node) {
	var tracked []*matrixVar
	for _, h := range hs {
		switch h := h.(type) {
		case *matrixVar:
			tracked = append(tracked, h)
		case relearning:
			h.relearn(learnNow)
		}
	}
	// Bases of one shape move in one batch of products: a few stacked products cost less than
	// many small ones, most of all on an accelerator (one kernel launch each).
	maxRate := st.cfg.Policy.FastTrackingRate
	var members []*matrixVar // in the order of resids
	var resids []*Node       // each group's sketch residuals
	for _, group := range matrixGroups(tracked, func(h *matrixVar) string {
		return h.oldBasis.Shape().String() + h.products.Sketch.Shape().String()
	}) {
		members = append(members, group...)
		if len(group) == 1 {
			h := group[0]
			h.tracked(projector.TrackBasis(h.oldBasis, h.products.Power, rate, maxRate))
			resids = append(resids, Reshape(projector.SketchResidual(h.oldBasis, h.products.Sketch), 1))
			continue
		}
		var bases, powers, sketches []*Node
		for _, h := range group {
			bases, powers, sketches = append(bases, h.oldBasis), append(powers, h.products.Power), append(sketches, h.products.Sketch)
		}
		basis := stacked(bases)
		next := projector.TrackBasis(basis, stacked(powers), rate, maxRate)
		st.trackedGroup(group, next, projector.Rotations(next, basis), basis, ok)
		resids = append(resids, projector.SketchResidual(basis, stacked(sketches)))
	}
	if len(members) > 0 {
		st.trackedResiduals(members, resids)
	}
}

// trackedResiduals smooths each tracked matrix's sketch residual (resids: its group's, in the
// order of members) into its stored one, as one vector, and marks its basis learned.
func (st *stepState) trackedResiduals(members []*matrixVar, resids []*Node) {
	ms := st.matrices
	for i, r := range resids {
		resids[i] = ConvertDType(r, ms.residual.DType())
	}
	resid := resids[0]
	if len(resids) > 1 {
		resid = Concatenate(resids, 0)
	}
	smoothed := smoothResidual(ms.read(ms.residual, members), ms.read(ms.valid, members), resid)
	ms.write(ms.residual, members, smoothed)
	ones := make([]int32, len(members))
	for i := range ones {
		ones[i] = 1
	}
	ms.write(ms.valid, members, Const(st.g, ones))
}

// trackingRate is the rate at which matrix bases move this step: Policy.FastTrackingRate for
// WarmUp steps from the start of training and from each refresh (learnNow), TrackingRate
// otherwise. A refresh is a burst of fast tracking, not a branch: every step runs the same graph.
func (st *stepState) trackingRate(learnNow *Node) *Node {
	g := st.g
	pol := st.cfg.Policy
	fastUntil := st.scalar(SvFastUntil)
	last := AddScalar(st.t, int64(st.cfg.WarmUp-1)) // a burst lasts WarmUp steps at most
	until := Where(learnNow, last, Min(fastUntil.NodeValue(g), last))
	fastUntil.SetNodeValue(until)
	fast := LessOrEqual(st.t, until)
	return Where(fast, Scalar(g, dtypes.Float32, pol.FastTrackingRate), Scalar(g, dtypes.Float32, pol.TrackingRate))
}

// trackedBatch is a group of matrices tracked as one stack: their state rotates as one stack too
// (stepState.rotateBatchStates).
type trackedBatch struct {
	members  []*matrixVar
	rotation *Node // [k, r, r]: each member's R = Q_nextᵀ·Q
}

// trackedGroup is matrixVar.tracked for a group tracked as one stack (next [k, rows, r]), with
// the guard's restore taken on the stack: where the step is not taken (ok false) each basis
// stays as this step read it (basis), one select for the group instead of one a matrix.
func (st *stepState) trackedGroup(group []*matrixVar, next, rotation, basis, ok *Node) {
	batch := &trackedBatch{members: group, rotation: rotation}
	for i, h := range unstacked(Where(ok, next, basis)) {
		group[i].batch = batch
		group[i].basis.SetNodeValue(h)
		st.guard.guarded[group[i].basis] = true
	}
}
