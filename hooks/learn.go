package hooks

import (
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gradsub/gradsub/projector"
)

// tracker is a handler whose basis moves every step (the matrix subspace). The optimizer moves
// the bases of one shape together (learnAll): trackInputs gives a basis and its tracking
// products, tracked takes the next basis and the step's residual, and rotateState carries the
// coefficient-shaped state into the new basis after the base optimizer's update (and restarts it
// from zero when the step it made was not finite: the state was poisoned).
type tracker interface {
	trackInputs() (basis, power, sketch *Node)
	tracked(next, resid *Node)
	rotateState(state []*model.Variable, stepOK *Node)
}

// selfGated is a handler that gates its own learning (temporal: an eigen-solve of its snapshots).
type selfGated interface {
	// learn applies the step's decision (learnNow, scalar bool): the basis, its statistics and
	// the coefficient gradient of the step.
	learn(learnNow *Node)
}

// learnAll applies the step's learning: trackers move their bases at rate (scalar), the bases of
// one shape stacked into one batch of products; the others learn where learnNow (scalar bool).
func (st *stepState) learnAll(hs []handler, learnNow, rate *Node) {
	groups := map[string][]tracker{}
	var keys []string // in handler order: the graph is the same build after build
	for _, h := range hs {
		switch h := h.(type) {
		case tracker:
			basis, _, sketch := h.trackInputs()
			key := basis.Shape().String() + sketch.Shape().String()
			if _, seen := groups[key]; !seen {
				keys = append(keys, key)
			}
			groups[key] = append(groups[key], h)
		case selfGated:
			h.learn(learnNow)
		default:
			panic("hooks: a handler must be a tracker or selfGated")
		}
	}
	maxRate := st.o.cfg.policy.FastTrackingRate
	for _, key := range keys {
		group := groups[key]
		if len(group) == 1 {
			basis, power, sketch := group[0].trackInputs()
			group[0].tracked(projector.TrackBasis(basis, power, rate, maxRate), projector.SketchResidual(basis, sketch))
			continue
		}
		var bases, powers, sketches []*Node
		for _, tr := range group {
			basis, power, sketch := tr.trackInputs()
			bases, powers, sketches = append(bases, basis), append(powers, power), append(sketches, sketch)
		}
		basis := Stack(bases, 0)
		next := projector.TrackBasis(basis, Stack(powers, 0), rate, maxRate)
		resid := projector.SketchResidual(basis, Stack(sketches, 0))
		for i, tr := range group {
			tr.tracked(Squeeze(Slice(next, AxisElem(i)), 0), Reshape(Slice(resid, AxisElem(i))))
		}
	}
}
