package hooks

import (
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gradsub/gradsub/projector"
)

// trackingBatch collects the tracked (matrix) bases of a step by shape, to move each group in
// one batch of products: a few stacked products cost less than many small ones, most of all on
// an accelerator (one kernel launch each).
type trackingBatch struct {
	groups map[string][]*matrixVar
	keys   []string // in handler order: the graph is the same build after build
}

// add files h's basis with the others of its shape.
func (b *trackingBatch) add(h *matrixVar) {
	key := h.oldBasis.Shape().String() + h.products.Sketch.Shape().String()
	if b.groups == nil {
		b.groups = map[string][]*matrixVar{}
	}
	if _, seen := b.groups[key]; !seen {
		b.keys = append(b.keys, key)
	}
	b.groups[key] = append(b.groups[key], h)
}

// learnAll applies the step's learning: tracked (matrix) bases move at rate (scalar, at most
// maxRate), those of one shape stacked into one batch of products, and each takes its next basis
// (tracked); a refresh (learnNow) is a burst of fast tracking, set by the rate, not a branch.
// Temporal ones re-learn where learnNow (scalar bool).
func (st *stepState) learnAll(hs []handler, learnNow, rate *Node) {
	var batch trackingBatch
	for _, h := range hs {
		switch h := h.(type) {
		case *matrixVar:
			batch.add(h)
		case relearning:
			h.relearn(learnNow)
		}
	}
	maxRate := st.cfg.policy.FastTrackingRate
	for _, key := range batch.keys {
		group := batch.groups[key]
		if len(group) == 1 {
			h := group[0]
			h.tracked(projector.TrackBasis(h.oldBasis, h.products.Power, rate, maxRate), projector.SketchResidual(h.oldBasis, h.products.Sketch))
			continue
		}
		var bases, powers, sketches []*Node
		for _, h := range group {
			bases, powers, sketches = append(bases, h.oldBasis), append(powers, h.products.Power), append(sketches, h.products.Sketch)
		}
		basis := Stack(bases, 0)
		next := projector.TrackBasis(basis, Stack(powers, 0), rate, maxRate)
		resid := projector.SketchResidual(basis, Stack(sketches, 0))
		for i, h := range group {
			h.tracked(Squeeze(projector.SliceAlong(next, 0, i, i+1), 0), Reshape(Slice(resid, AxisElem(i))))
		}
	}
}
