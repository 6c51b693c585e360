package hooks

import (
	"strings"

	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gomlx/gomlx/support/exceptions"
	"github.com/gradsub/gradsub/internal/upstream"
)

// applyBase runs the base optimizer once over every trainable variable, with the projected
// variables represented by their coefficient variables, then lifts the coefficient steps back.
//
// The base optimizer pairs gradients with the trainable variables it finds in the scope, so for
// the duration of the call the coefficient variables are marked trainable (and are zero, so the
// step the optimizer applies to them is the coefficient step itself), and matrix-projected
// variables are marked non-trainable (so no full-size state is ever created for them).
func (st *stepState) applyBase(trainables []*model.Variable, grads []*Node, hs []handler, guard *stepGuard, check stepCheck, d decision, fullTurn map[handler]*Node) {
	g := st.g
	byVar := make(map[*model.Variable]handler, len(hs))
	byCoef := make(map[*model.Variable]handler, len(hs))
	zero := make(map[handler]*Node, len(hs))
	for _, h := range hs {
		v := h.variable()
		byVar[v] = h
		coef, _ := h.coefficients()
		byCoef[coef] = h
		zero[h] = ZerosLike(coef.NodeValue(g))
		coef.SetNodeValue(zero[h])
		coef.SetTrainable(true)
		if !h.fullUpdateInBase() {
			v.SetTrainable(false)
		}
	}
	defer func() {
		for _, h := range hs {
			coef, _ := h.coefficients()
			coef.SetTrainable(false)
			h.variable().SetTrainable(true)
		}
	}()
	gradOf := make(map[*model.Variable]*Node, len(trainables))
	for i, v := range trainables {
		gradOf[v] = grads[i]
	}

	var baseGrads []*Node
	for v := range st.scope.IterVariables() {
		if !v.Trainable || !v.InUseByGraph(g) {
			continue
		}
		if h, ok := byCoef[v]; ok {
			_, coefGrad := h.coefficients()
			if h.fullUpdateInBase() { // temporal: no coefficient step until it projects
				coefGrad = Where(h.useProjection(), coefGrad, upstream.ZeroOf(coefGrad))
			}
			baseGrads = append(baseGrads, coefGrad)
			continue
		}
		grad, ok := gradOf[v]
		if !ok {
			exceptions.Panicf("hooks.Subspace: trainable variable %s appeared while building the step (it has no gradient); create variables in the model function only", v.Path())
		}
		if h, ok := byVar[v]; ok { // temporal warm-up: full gradient, masked once projecting
			grad = Where(h.useProjection(), upstream.ZeroOf(grad), grad)
		}
		baseGrads = append(baseGrads, grad)
	}
	st.cfg.base.(gradientOptimizer).UpdateGraphWithGradients(st.scope, baseGrads, st.loss.DType())

	lr := st.learningRate()
	steps := make(map[handler]*Node, len(hs))
	stepOK := make(map[handler]*Node, len(hs)) // the coefficient step is finite
	state := make(map[handler][]*model.Variable, len(hs))
	for _, h := range hs {
		state[h] = st.coefficientState(h)
	}
	for _, h := range hs {
		v := h.variable()
		coef, _ := h.coefficients()
		// The coefficient variable started the base step at zero: its value now is the step.
		step := coef.NodeValue(g)
		// The update itself is checked: a poisoned optimizer state (a damaged checkpoint, an
		// overflowed moment) can make a non-finite step from finite gradients. Such a step is
		// not applied, and the coefficient state restarts (rotateStates). A step the guard
		// skips is zeroed by the same select (one coefficient-sized op, not two).
		stepOK[h] = allFinite(step)
		step = Where(LogicalAnd(stepOK[h], check.ok), step, upstream.ZeroOf(step))
		steps[h] = step
		before := guard.before[v] // the weights are untouched until the base optimizer runs
		turn := fullTurn[h]       // nil: no full-update rule
		if h.fullUpdateInBase() {
			projected := Add(before, h.lift(step, turn, state[h]))
			if wd := st.cfg.weightDecay; wd > 0 && lr != nil {
				projected = Sub(projected, Mul(ConvertDType(lr, v.DType()), MulScalar(before, wd)))
			}
			v.SetNodeValue(Where(h.useProjection(), st.clipStep(before, projected), v.NodeValue(g)))
		} else {
			// The weight takes W·(1 − lr·wd) + lift(step), with the step guard folded into the
			// small coefficient step and the decay scalar: a bad step leaves W as it was without
			// a full-size select (each full-size op is a pass over the weight).
			lifted := h.lift(step, turn, state[h])
			projected := Add(before, lifted)
			if wd := st.cfg.weightDecay; wd > 0 && lr != nil {
				decay := OneMinus(MulScalar(ConvertDType(lr, v.DType()), wd))
				projected = Add(Mul(before, Where(check.ok, decay, upstream.OneOf(decay))), lifted)
			}
			v.SetNodeValue(st.clipStep(before, projected))
			guard.guarded[v] = true
		}
		coef.SetNodeValue(zero[h])
	}
	if pol := st.cfg.policy; pol.CheckEvery > 0 && pol.CurvatureFactor > 0 {
		st.curvature(hs, steps, d.learnNow) // only its rule reads it
	}
	st.rotateStates(hs, stepOK)
}

// clipStep applies GoMLX's clip_step_by_value (optimizer.ParamClipStepByValue) to a projected
// variable's weight step, as the base optimizer applies it to the steps it makes: a lifted
// coefficient step sums Rank clipped coefficients, so clipping only those (the base optimizer
// clips the coefficient step too) let a weight move by more than the clip. It costs a pass over
// the weight, only when the parameter is set.
func (st *stepState) clipStep(before, updated *Node) *Node {
	clip := model.GetParamOr(st.scope, optimizer.ParamClipStepByValue, 0.0)
	if clip <= 0 {
		return updated
	}
	return Add(before, ClipScalar(Sub(updated, before), -clip, clip))
}

// rotateStates hands each handler its coefficient-shaped state (coefficientState), to carry
// into its next basis (handler.rotateState).
func (st *stepState) rotateStates(hs []handler, stepOK map[handler]*Node) {
	for _, h := range hs {
		h.rotateState(st.coefficientState(h), stepOK[h])
	}
}

// coefficientState is a handler's coefficient-shaped state: the variables named after its
// coefficients ("…_coefficients_1st_moment" of the base optimizer, "…_coefficients_prev_grad" of
// the curvature signal), under any scope ending in the coefficients' scope, with their shape.
// The base optimizer's state is found by name because GoMLX's optimizers keep it under their own
// scope, mirroring the variable's path.
func (st *stepState) coefficientState(h handler) []*model.Variable {
	coef, _ := h.coefficients()
	var state []*model.Variable
	for sv := range st.scope.Store().IterVariables() {
		if sv != coef && sv.InUseByGraph(st.g) && strings.HasPrefix(sv.Name(), coef.Name()+"_") &&
			strings.HasSuffix(sv.Scope(), coef.Scope()) && sv.Shape().Equal(coef.Shape()) {
			state = append(state, sv)
		}
	}
	return state
}

// secondMoment says whether the base optimizer keeps a second moment of the coefficients (named
// "…_2nd_moment", as GoMLX's Adam, AdamW and RMSProp name it): it normalises its steps
// elementwise, and their length does not follow the gradient's.
func secondMoment(state []*model.Variable) bool {
	for _, sv := range state {
		if strings.HasSuffix(sv.Name(), "_2nd_moment") {
			return true
		}
	}
	return false
}

// learningRate returns the base optimizer's learning-rate node, if it keeps one in the usual place.
func (st *stepState) learningRate() *Node {
	v := st.scope.At(optimizer.Scope).GetVariable(optimizer.ParamLearningRate)
	if v == nil {
		return nil
	}
	return v.NodeValue(st.g)
}
