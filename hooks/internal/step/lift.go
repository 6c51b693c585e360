package step

import (
	"slices"

	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gradsub/gradsub/internal/upstream"
	"github.com/gradsub/gradsub/projector"
)

// After the base optimizer's update (base.go): its coefficient steps, checked and guarded, and
// the lift of each into its weight.

// guardedSteps reads the base optimizer's coefficient step of each handler, checked and guarded
// (taken), and the step the tracked directions take, scaled and lengthened (steps, which the
// curvature rule measures along); stepOK says which were finite.
//
// The update itself is checked: a poisoned optimizer state (a damaged checkpoint, an overflowed
// moment) can make a non-finite step from finite gradients. Such a step is not applied, and the
// coefficient state restarts (rotateStates). A step the guard skips is zeroed by the same
// select (one coefficient-sized op, not two). A stack's members are checked and zeroed as one.
func (st *stepState) guardedSteps(base *baseAdapter, hs []handler, factors map[handler]*Node, lengths *stepLengthRule, check stepCheck) (taken, steps map[handler]*Node, stepOK *stepVerdicts) {
	taken, steps = make(map[handler]*Node, len(hs)), make(map[handler]*Node, len(hs))
	stepOK = &stepVerdicts{one: make(map[handler]*Node, len(hs)), stacks: map[*coefStack]*Node{}}
	for _, s := range base.stacks {
		step := base.stackStep(s) // [k, …]
		k := len(s.members)
		rows := Reshape(step, k, step.Shape().Size()/k)
		finite := IsFinite(rowDots(rows, rows)) // allFinite of each member's step: [k]
		stepOK.stacks[s] = finite
		st.stackSteps(s, projector.KeepRows(step, LogicalAnd(finite, check.ok)), factors, lengths, taken)
	}
	for _, h := range hs {
		step, stacked := taken[h]
		if !stacked {
			step = base.step(h)
			stepOK.one[h] = allFinite(step)
			step = Where(LogicalAnd(stepOK.one[h], check.ok), step, upstream.ZeroOf(step))
		}
		taken[h], steps[h] = step, step
		if m, ok := h.(*matrixVar); ok {
			// As lift builds it: scaled (Config.Scale) and lengthened (the step-length rule).
			m.trackedFactor = factors[h]
			steps[h] = m.lengthened(m.scaled(step))
		}
	}
	return taken, steps, stepOK
}

// stackSteps gives each member of stack s its step (taken) from the stack's guarded steps
// ([k, …]): scaled (Config.Scale: one scale for a stack's shape and rank) and lengthened (the
// step-length rule's factors, a column) on the stack, a slice each, where each member took a
// slice, a scale and a factor before (matrixVar.stepsFromStack), so the lift, the complement's
// sizing and the curvature rule read them as before.
func (st *stepState) stackSteps(s *coefStack, kept *Node, factors map[handler]*Node, lengths *stepLengthRule, taken map[handler]*Node) {
	m0 := s.members[0]
	scaled := kept
	if scale := st.cfg.ScaleOf(m0.side.Rows(m0.m, m0.n), m0.rank); scale != 1 {
		scaled = MulScalar(kept, scale)
	}
	parts := unstacked(scaled)
	var lengthened []*Node
	if lengths != nil && factors[m0] != nil {
		column := lengths.column(s.members, scaled.Rank())
		lengthened = unstacked(Mul(scaled, ConvertDType(column, scaled.DType())))
	}
	for i, m := range s.members {
		taken[m] = parts[i]
		if lengthened != nil {
			m.stepsFromStack(parts[i], lengthened[i], factors[m])
		} else {
			m.stepsFromStack(parts[i], nil, nil)
		}
	}
}

// stepVerdicts says whose coefficient steps were finite: a scalar a handler, a vector a stack.
type stepVerdicts struct {
	one    map[handler]*Node
	stacks map[*coefStack]*Node // [k], by slot
}

// of is h's verdict (a scalar).
func (v *stepVerdicts) of(h handler) *Node {
	if ok, found := v.one[h]; found {
		return ok
	}
	m := h.(*matrixVar)
	v.one[h] = Reshape(Slice(v.stacks[m.stack], AxisElem(m.slot)))
	return v.one[h]
}

// vector is the verdicts of members, [k]: their stack's where they are one, in order.
func (v *stepVerdicts) vector(members []*matrixVar) *Node {
	if s := members[0].stack; s != nil && slices.Equal(s.members, members) {
		return v.stacks[s]
	}
	oks := make([]*Node, len(members))
	for i, m := range members {
		oks[i] = v.of(m)
	}
	return Stack(oks, 0)
}

// liftAll moves each projected weight by its lifted coefficient step (taken), with GoMLX's
// weight decay at the base optimizer's learning rate lr (nil: none found) and clip.
func (st *stepState) liftAll(hs []handler, taken map[handler]*Node, lr *Node, guard *stepGuard, check stepCheck) {
	decays := map[dtypes.DType]*Node{} // 1 − lr·wd, or 1 for a step the guard skips
	for _, h := range hs {
		v, step := h.variable(), taken[h]
		before := guard.before[v] // the weights are untouched until the base optimizer runs
		if w, warming := h.(warmingUp); warming {
			projected := Add(before, h.lift(step))
			if wd := st.cfg.WeightDecay; wd > 0 && lr != nil {
				projected = Sub(projected, Mul(ConvertDType(lr, v.DType()), MulScalar(before, wd)))
			}
			v.SetNodeValue(Where(w.useProjection(), st.clipStep(before, projected), v.NodeValue(st.g)))
			continue
		}
		// The weight takes W·(1 − lr·wd) + lift(step), with the step guard folded into the
		// small coefficient step and the decay scalar: a bad step leaves W as it was without a
		// full-size select (each full-size op is a pass over the weight).
		lifted := h.lift(step)
		projected := Add(before, lifted)
		if wd := st.cfg.WeightDecay; wd > 0 && lr != nil {
			if decays[v.DType()] == nil { // one scalar a dtype, for every weight
				decay := OneMinus(MulScalar(ConvertDType(lr, v.DType()), wd))
				decays[v.DType()] = Where(check.ok, decay, upstream.OneOf(decay))
			}
			projected = Add(Mul(before, decays[v.DType()]), lifted)
		}
		v.SetNodeValue(st.clipStep(before, projected))
		guard.guarded[v] = true
	}
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
