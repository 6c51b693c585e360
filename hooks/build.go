package hooks

import (
	"cmp"
	"slices"

	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/train"
	"github.com/gradsub/gradsub/hooks/internal/step"
)

// buildStep builds one training step: the plan, then the projector's phases
// (hooks/internal/step), then the record the Report, FLOPs and the plan read. With grads nil it
// back-propagates from loss itself, taking the direct path where it can; otherwise grads are the
// full gradients of trainables (gradient accumulation) and loss is a stand-in of its dtype.
func (o *Optimizer) buildStep(scope *model.Scope, g *Graph, trainables []*model.Variable, loss *Node, grads []*Node, forwardMark int) {
	given := grads != nil
	// Plan: which variables are projected, on which path, side and rank.
	plan, products := o.makePlan(scope, g, trainables, !given)
	read := firstReads(g, trainables) // before the update sets new values
	if !projectsAny(plan) {
		// The automatic rank left every matrix out: the step is the base optimizer's, exactly
		// (the guard's passes over every weight and moment cost up to half a step on a wide
		// MLP, for a wrapper that projects nothing).
		if given {
			o.cfg.base.(train.OptimizeWithGradients).UpdateGraphWithGradients(scope, grads, loss.DType())
		} else {
			o.cfg.base.UpdateGraph(scope, g, loss)
		}
		o.record(g, GraphMarks{Forward: forwardMark, Gradient: len(g.Nodes())}, inModelOrder(plan, read), "", loss)
		return
	}
	entries := make([]step.Entry, len(plan))
	for i, e := range plan {
		entries[i] = step.Entry{Route: e.Route, Rank: e.Rank, Side: e.Side, View: e.view}
	}
	gradientMark, prices := step.Build(o.cfg.settings(), scope, g, trainables, loss, grads, entries, products)
	for i := range plan {
		if p, ok := prices[plan[i].Variable]; ok {
			plan[i].StockStateBytes, plan[i].StateBytes = p.Stock, p.Projected
		}
	}
	o.record(g, GraphMarks{Forward: forwardMark, Gradient: gradientMark}, inModelOrder(plan, read), scope.At(StateScope).Scope(), loss)
}

// projectsAny says whether the plan projects any variable.
func projectsAny(plan []PlanEntry) bool {
	for _, e := range plan {
		if e.Route != RouteFull {
			return true
		}
	}
	return false
}

// firstReads is where the model first reads each trainable in g (its value's node), by path.
func firstReads(g *Graph, trainables []*model.Variable) map[string]NodeId {
	read := make(map[string]NodeId, len(trainables))
	for _, v := range trainables {
		read[v.Path()] = v.NodeValue(g).Id()
	}
	return read
}

// inModelOrder is the plan as the model reads its variables (read: firstReads). The store's
// own order, which the plan is made in, is a checkpoint's load order after a resume, and that
// differs from load to load: the printed plan, the Report and the Monitor's lines would too.
func inModelOrder(plan []PlanEntry, read map[string]NodeId) []PlanEntry {
	slices.SortStableFunc(plan, func(a, b PlanEntry) int { return cmp.Compare(read[a.Variable], read[b.Variable]) })
	return plan
}
