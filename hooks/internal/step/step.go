package step

import (
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gradsub/gradsub/hooks/internal/direct"
	"github.com/gradsub/gradsub/hooks/internal/rules"
	"github.com/gradsub/gradsub/projector"
)

// This rule's state: entries of the schema (state.go).
var (
	SvStep = rules.NewStateVar("step", dtypes.Int64, "schedule: steps taken, skipped ones included")
)

// Entry is the plan's decision for one trainable variable, as the step reads it.
type Entry struct {
	Route rules.Route
	Rank  int
	Side  projector.Side
	View  *direct.View // post-hoc route: how the variable's gradient is seen as a matrix
}

// StatePrice is a projected matrix's optimizer state: the base optimizer's for the weight
// unprojected (its moments of the weight's shape), and what the projection keeps instead (the
// basis, the coefficients and the base optimizer's state of the coefficients), in bytes.
type StatePrice struct{ Stock, Projected int64 }

// Build builds the projector's part of one training step, phase by phase, for a plan that
// projects at least one variable (plan[i] and products[i] are trainables[i]'s; products[i] is
// nil off the direct route). With grads nil it back-propagates from loss itself, taking the
// direct path where it can; otherwise grads are the full gradients of trainables (gradient
// accumulation) and loss is a stand-in of its dtype. It returns the number of g's nodes when
// the gradients and the projector's measurements were built (the rest is the update), and the
// projected matrices' state prices by variable path.
func Build(cfg *Settings, scope *model.Scope, g *Graph, trainables []*model.Variable, loss *Node, grads []*Node, plan []Entry, products []*direct.Product) (gradientMark int, prices map[string]StatePrice) {
	// Gradients: to each variable, except on the direct path, where back-propagation stops at the
	// product's output ∂y and the product's VJP skips ∂W (internal/direct/vjp.go).
	given := grads != nil
	var readerGrads []*Node // on the direct path: the gradient through the weight's other readers
	if !given {
		grads, readerGrads = backPropagate(g, loss, trainables, products)
	}
	guard := newStepGuard(scope, g)
	st := newStepState(cfg, scope, g, loss, given)
	st.guard = guard
	// Project: each variable's coefficient gradient in its step's basis, and the products that
	// move the basis (matrix.go, temporal.go).
	hs := st.project(trainables, grads, readerGrads, plan, products)
	// Measure, part one: is the step usable (finite, the loss not exploding against the loss
	// rule's smoothed loss)?
	lossRule := st.loadLossRule()
	check := st.checkStep(gradientsToCheck(grads, products), hs, lossRule.smoothed())
	// Measure and decide: the drift controller (controller.go).
	d := st.control(hs, check, lossRule)
	// Learn: the bases move (tracking) or are re-learned (temporal); then the rules that judge them.
	st.learnAll(hs, d.learnNow, st.trackingRate(d.learnNow), check.ok)
	st.afterLearning(hs, d, check)
	gradientMark = len(g.Nodes())
	// Base step and lift: the wrapped optimizer on the coefficients, lifted back (base.go).
	st.applyBase(trainables, grads, hs, guard, check, d)
	// Guard: a skipped step leaves every variable as it was, but the guard's own counters.
	guard.restoreUnless(check.ok, guardCounters(st.root.Scope())...)
	st.repairStatistics()
	return gradientMark, st.statePrices(hs)
}

// backPropagate builds the gradients of loss: with respect to each trainable's value, or, on
// the direct path, to its product's output. For a direct weight that other ops read as a
// function of itself alone (a regularizer), readerGrads[i] is the gradient through those
// readers: the product's VJP gives none (internal/direct/vjp.go), so it is theirs alone, elementwise work.
func backPropagate(g *Graph, loss *Node, trainables []*model.Variable, products []*direct.Product) (grads, readerGrads []*Node) {
	wrt := make([]*Node, len(trainables))
	var readOnce []int // the trainables whose value is also a gradient target
	for i, v := range trainables {
		wrt[i] = v.NodeValue(g)
		if p := products[i]; p != nil {
			direct.MarkDirect(g, p)
			wrt[i] = p.Output
			if p.WeightReaders != "" {
				readOnce = append(readOnce, i)
			}
		}
	}
	for _, i := range readOnce {
		wrt = append(wrt, trainables[i].NodeValue(g))
	}
	all := Gradient(loss, wrt...)
	grads, readerGrads = all[:len(trainables)], make([]*Node, len(trainables))
	for k, i := range readOnce {
		readerGrads[i] = all[len(trainables)+k]
	}
	return grads, readerGrads
}

// gradientsToCheck are the gradients the guard checks for finiteness. On the direct path the
// gradient taken is the product's output gradient ∂y, a full activation gradient: what reaches
// the update is its coefficient (checked by checkStep), and what reaches earlier layers is
// checked at their own gradients.
func gradientsToCheck(grads []*Node, products []*direct.Product) []*Node {
	var checked []*Node
	for i, grad := range grads {
		if products[i] == nil {
			checked = append(checked, grad)
		}
	}
	return checked
}

// project builds each projected variable's handler, in the order of their paths: the store's
// order changes when a checkpoint loads, and the rotation of full updates and the order of sums
// over variables must not.
func (st *stepState) project(trainables []*model.Variable, grads, readerGrads []*Node, plan []Entry, products []*direct.Product) []handler {
	// The matrices' state first, then their bases for this step, prepared together (a stack per
	// basis shape), then their products.
	matrices := make([]*matrixVar, len(trainables))
	var prepared []*matrixVar
	for i, v := range trainables {
		switch e := plan[i]; e.Route {
		case rules.RouteDirect:
			matrices[i] = newMatrixVar(st, v, products[i].M, products[i].N, e.Rank, e.Side)
		case rules.RoutePostHoc:
			matrices[i] = newMatrixVar(st, v, e.View.M, e.View.N, e.Rank, e.Side)
		default:
			continue
		}
		prepared = append(prepared, matrices[i])
	}
	// By path: the per-matrix vectors and the stacks number the matrices in this order, and a
	// stack's members draw their complement's directions in one draw in it.
	slices.SortFunc(prepared, func(a, b *matrixVar) int { return strings.Compare(a.v.Path(), b.v.Path()) })
	if len(prepared) > 0 {
		st.matrixState(prepared)
	}
	st.prepareBases(prepared)
	var hs []handler
	for i, v := range trainables {
		switch plan[i].Route {
		case rules.RouteTemporal:
			hs = append(hs, newTemporal(st, v, grads[i]))
		case rules.RouteDirect:
			var readerGrad *Node
			if readerGrads != nil {
				readerGrad = readerGrads[i]
			}
			hs = append(hs, newMatrixDirect(st, matrices[i], products[i], grads[i], readerGrad))
		case rules.RoutePostHoc:
			hs = append(hs, newMatrixPostHoc(matrices[i], grads[i], plan[i].View))
		}
	}
	slices.SortFunc(hs, func(a, b handler) int { return strings.Compare(a.variable().Path(), b.variable().Path()) })
	return hs
}

// stepState is what one step graph shares across the projected variables: where the state
// lives, and the step's schedule, all set when it is made. What the phases decide is passed
// along as their results (stepCheck, decision), not stored here.
type stepState struct {
	cfg   *Settings // the optimizer's configuration, as of this build
	scope *model.Scope
	root  *model.Scope // the state scope
	g     *Graph
	loss  *Node

	noLoss  bool  // the trainer gave gradients and no loss (UpdateGraphWithGradients): its rules are off
	build   int64 // a random number for this build of the step graph (the guard's hold lasts one build)
	t       *Node // this step's number, 1-based (int64)
	first   *Node // t == 1
	warm    *Node // t ≤ WarmUp
	isCheck *Node // a drift check runs this step
	learnAt *Node // steps that learn without a trigger: temporal t == WarmUp; matrix t == 1

	seedStepNode *Node          // t as the complement's seeds read it (seedStep)
	matrices     *matrixScalars // matrix mode's per-matrix scalar state (nil: no matrix projected)
	guard        *stepGuard     // variables written already guarded (kept on a bad step) tell it
}

func newStepState(cfg *Settings, scope *model.Scope, g *Graph, loss *Node, noLoss bool) *stepState {
	root := scope.At(rules.StateScope)
	st := &stepState{cfg: cfg, scope: scope, root: root, g: g, loss: loss, noLoss: noLoss, build: rand.Int64()}
	stepVar := st.scalar(SvStep)
	// Counters are clamped where a damaged checkpoint could make them lock a rule (here: a
	// negative step count would keep warm-up going).
	st.t = AddScalar(Max(stepVar.NodeValue(g), Const(g, int64(0))), 1)
	stepVar.SetNodeValue(st.t)
	n0 := int64(st.cfg.WarmUp)
	st.warm = LessOrEqual(st.t, Const(g, n0))
	st.first = Equal(st.t, Const(g, int64(1)))
	if st.cfg.Mode == rules.Temporal {
		st.learnAt = Equal(st.t, Const(g, n0))
	} else {
		st.learnAt = st.first // warm-up's fast tracking starts
	}
	if k := int64(st.cfg.Policy.CheckEvery); k > 0 {
		sinceWarm := Sub(st.t, Const(g, n0))
		st.isCheck = LogicalAnd(GreaterThan(sinceWarm, Const(g, int64(0))),
			Equal(ModScalar(sinceWarm, k), Const(g, int64(0))))
	} else {
		st.isCheck = Const(g, false)
	}
	return st
}

// handler is one projected variable's part of the step: what both modes do. What one mode alone
// does is its own interface (warmingUp, relearning), or its type's (matrixVar's tracking).
type handler interface {
	variable() *model.Variable
	// coefficients is the coefficient variable the base optimizer updates, and its gradient.
	coefficients() (*model.Variable, *Node)
	// lift maps the base optimizer's coefficient step to the variable's shape: the step the
	// variable takes.
	lift(step *Node) *Node
	// rotateState carries the coefficient-shaped state (the base optimizer's moments, the
	// curvature signal's history), as this step left it, into the next step's basis, and restarts
	// it from zero after a non-finite step (stepOK false: the state was poisoned).
	rotateState(state []*model.Variable, stepOK *Node)
}

// warmingUp is a handler whose variable takes the base optimizer's own full step until its basis
// is learned (temporal mode: a basis is learned from WarmUp gradients). Until then the base
// optimizer sees the variable itself, and the coefficient gradient is masked.
type warmingUp interface {
	handler
	// useProjection (scalar bool) says whether this step's update is the lifted coefficient
	// step; otherwise the base optimizer's step on the variable itself.
	useProjection() *Node
	// unlearned (scalar bool) says the step starts from no valid basis, which the residual rule
	// replaces at the next check.
	unlearned() *Node
}

// relearning is a handler whose basis is re-learned where the step decides (temporal mode),
// rather than tracked every step.
type relearning interface {
	handler
	relearn(learnNow *Node)
}
