package step

import (
	"slices"

	"github.com/gomlx/compute/shapes"

	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/train"
	"github.com/gomlx/gomlx/support/exceptions"
	"github.com/gradsub/gradsub/internal/upstream"
)

// baseAdapter runs the wrapped GoMLX optimizer for the projected variables, on their
// coefficient variables in their place, and reads back what it did. A GoMLX optimizer updates
// the trainable variables it finds in the scope, pairing them with the gradients it is given,
// and exposes neither the step it takes nor its state. So, for the duration of the update, the
// adapter marks the coefficient variables trainable and the matrix-projected variables not (no
// full-size state is ever created for them), and starts each coefficient variable at zero: its
// value after the update is the step. The optimizer's state of a coefficient variable is found by
// GoMLX's naming rule (coefficientState), its learning rate where GoMLX keeps it.
type baseAdapter struct {
	st     *stepState
	hs     []handler
	zero   map[*model.Variable]*Node // each coefficient variable's zero start (a stack's included)
	stacks []*coefStack              // the stacks of hs's matrices, in order
	// What stands in for what during the update (standIn): by projected variable, by
	// coefficient variable, by stack variable.
	byVar   map[*model.Variable]handler
	byCoef  map[*model.Variable]handler
	byStack map[*model.Variable]*coefStack
	packs   []*varPack // the small unprojected variables, a vector a dtype (packs.go)
	byPack  map[*model.Variable]*varPack
}

func (st *stepState) newBaseAdapter(hs []handler) *baseAdapter {
	a := &baseAdapter{st: st, hs: hs, zero: make(map[*model.Variable]*Node, len(hs))}
	for _, h := range hs {
		if m, ok := h.(*matrixVar); ok && m.stack != nil && !slices.Contains(a.stacks, m.stack) {
			a.stacks = append(a.stacks, m.stack)
		}
	}
	return a
}

// update runs the base optimizer once over every trainable variable (grads[i] is trainables[i]'s
// gradient), with the projected variables represented by their coefficient variables: a stack's
// members by the stack, with their coefficient gradients stacked.
func (a *baseAdapter) update(trainables []*model.Variable, grads []*Node) {
	st, g := a.st, a.st.g
	coefs := a.standIn()
	a.packIn(trainables)
	defer func() {
		for _, coef := range coefs {
			coef.SetTrainable(false)
		}
		for _, h := range a.hs {
			h.variable().SetTrainable(true)
		}
		a.packsBack()
	}()
	gradOf := make(map[*model.Variable]*Node, len(trainables))
	for i, v := range trainables {
		gradOf[v] = grads[i]
	}
	var baseGrads []*Node
	for v := range st.scope.IterVariables() {
		if v.Trainable && v.InUseByGraph(g) {
			baseGrads = append(baseGrads, a.gradientFor(v, gradOf))
		}
	}
	st.cfg.Base.(train.OptimizeWithGradients).UpdateGraphWithGradients(st.scope, baseGrads, st.loss.DType())
}

// standIn marks the coefficient variables (a stack's included) trainable in the projected
// variables' place, each starting at zero, and returns them.
func (a *baseAdapter) standIn() (coefs []*model.Variable) {
	a.byVar = make(map[*model.Variable]handler, len(a.hs))
	a.byCoef = make(map[*model.Variable]handler, len(a.hs))
	a.byStack = make(map[*model.Variable]*coefStack, len(a.stacks))
	for _, h := range a.hs {
		v := h.variable()
		a.byVar[v] = h
		if _, warming := h.(warmingUp); !warming {
			v.SetTrainable(false)
		}
		if coef, _ := h.coefficients(); coef != nil {
			a.byCoef[coef] = h
			coefs = append(coefs, coef)
		}
	}
	for _, s := range a.stacks {
		a.byStack[s.v] = s
		coefs = append(coefs, s.v)
	}
	for _, coef := range coefs {
		a.zero[coef] = ZerosLike(coef.NodeValue(a.st.g))
		coef.SetNodeValue(a.zero[coef])
		coef.SetTrainable(true)
	}
	return coefs
}

// gradientFor is the gradient the base optimizer is given for trainable v: a stack's members'
// coefficient gradients stacked, a coefficient variable's gradient, or v's own (gradOf).
func (a *baseAdapter) gradientFor(v *model.Variable, gradOf map[*model.Variable]*Node) *Node {
	if s, ok := a.byStack[v]; ok {
		parts := make([]*Node, len(s.members))
		for i, m := range s.members {
			parts[i] = m.stepCoef
		}
		return stacked(parts)
	}
	if grad, ok := a.packGradient(v, gradOf); ok {
		return grad
	}
	if h, ok := a.byCoef[v]; ok {
		_, coefGrad := h.coefficients()
		if w, warming := h.(warmingUp); warming { // no coefficient step until it projects
			coefGrad = Where(w.useProjection(), coefGrad, upstream.ZeroOf(coefGrad))
		}
		return coefGrad
	}
	grad, ok := gradOf[v]
	if !ok {
		exceptions.Panicf("hooks.Subspace: trainable variable %s appeared while building the step (it has no gradient); create variables in the model function only", v.Path())
	}
	if w, warming := a.byVar[v].(warmingUp); warming { // warm-up: full gradient, masked once projecting
		grad = Where(w.useProjection(), upstream.ZeroOf(grad), grad)
	}
	return grad
}

// stackStep is step for a stack: its members' steps, [k, …].
func (a *baseAdapter) stackStep(s *coefStack) *Node {
	step := s.v.NodeValue(a.st.g)
	s.v.SetNodeValue(a.zero[s.v])
	return step
}

// step is the coefficient step the base optimizer took for h, not of a stack (its coefficient
// variable started the update at zero); the variable is reset to zero, as it is stored between
// steps.
func (a *baseAdapter) step(h handler) *Node {
	coef, _ := h.coefficients()
	step := coef.NodeValue(a.st.g)
	coef.SetNodeValue(a.zero[coef])
	return step
}

// keepZeroed tells the guard that the coefficient variables need no restore: the adapter
// stores them as zero between steps (step), whether the guard takes the step or not.
func (a *baseAdapter) keepZeroed(guard *stepGuard) {
	for coef := range a.zero {
		guard.guarded[coef] = true
	}
}

// learningRate is the base optimizer's learning-rate node, or nil where it keeps none in GoMLX's
// usual place.
func (a *baseAdapter) learningRate() *Node { return upstream.LearningRate(a.st.scope, a.st.g) }

// applyBase runs the base optimizer once over every trainable variable (baseAdapter), then lifts
// the coefficient steps back into the projected weights.
func (st *stepState) applyBase(trainables []*model.Variable, grads []*Node, hs []handler, guard *stepGuard, check stepCheck, d decision) {
	base := st.newBaseAdapter(hs)
	base.update(trainables, grads)
	base.packOut(check.ok, guard)
	// The last coefficient gradients, for the rules that read them: the curvature rule (every
	// handler) and the step-length rule (its matrices, found from the base optimizer's state).
	pol := st.cfg.Policy
	curvatureOn := pol.CheckEvery > 0 && pol.CurvatureFactor > 0
	lengths := st.stepLength(hs)
	var history *gradientHistory
	switch {
	case curvatureOn:
		history = st.loadGradientHistory(hs)
	case lengths != nil:
		history = st.loadGradientHistory(lengths.matrices)
	}
	var factors map[handler]*Node
	if lengths != nil {
		factors = lengths.factors(history)
	}

	taken, steps, stepOK := st.guardedSteps(base, hs, factors, lengths, check)
	base.keepZeroed(guard)
	st.complementSteps(hs, taken)
	st.liftAll(hs, taken, base.learningRate(), guard, check)
	if curvatureOn {
		st.curvature(hs, steps, history, d.learnNow) // only its rule reads it
	}
	if history != nil {
		history.record() // before the rotation, which carries it into the next basis
	}
	st.rotateStates(hs, stepOK, base.stacks)
}

// coefficientState is a handler's coefficient-shaped state kept per variable: the base
// optimizer's ("…_coefficients_1st_moment", where the coefficients are not stacked) and the
// gradient history ("…_coefficients_prev_grad"), found by GoMLX's naming rule for an
// optimizer's state (upstream.IsStateOf): GoMLX's optimizers keep it under their own scope,
// mirroring the variable's path, and expose no list of it. A stack's is stackStateInGraph.
func (st *stepState) coefficientState(h handler) []*model.Variable {
	scope, name := model.SplitPath(SvCoefficients.OfVariable(st.root.Scope(), h.variable().Path()))
	return st.stateInGraph(scope, name, coefficientShape(h))
}

// stateInGraph is the state this graph keeps named after the variable name in scope, of shape
// (upstream.IsStateAt), whether or not the store holds that variable.
func (st *stepState) stateInGraph(scope, name string, shape shapes.Shape) []*model.Variable {
	var state []*model.Variable
	for sv := range st.scope.Store().IterVariables() {
		if sv.InUseByGraph(st.g) && upstream.IsStateAt(sv, scope, name, shape) {
			state = append(state, sv)
		}
	}
	return state
}

// coefficientShape is the shape of h's coefficients.
func coefficientShape(h handler) shapes.Shape {
	if m, ok := h.(*matrixVar); ok {
		return m.coefShape
	}
	coef, _ := h.coefficients()
	return coef.Shape()
}

// normalises says whether the base optimizer normalises h's steps (upstream.NormalisesSteps),
// from its state, its stack's where it has one.
func (st *stepState) normalises(h handler) bool {
	if m, ok := h.(*matrixVar); ok && m.stack != nil && upstream.NormalisesSteps(st.stackStateInGraph(m.stack)) {
		return true
	}
	return upstream.NormalisesSteps(st.coefficientState(h))
}
