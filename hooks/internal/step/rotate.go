package step

import (
	"slices"
	"strings"

	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gradsub/gradsub/internal/upstream"
	"github.com/gradsub/gradsub/projector"
)

// The coefficient-shaped state carried into the next bases after the step: the base
// optimizer's moments and the gradient history, a stack at a time.

// rotateStates hands each handler its coefficient-shaped state (coefficientState), to carry
// into its next basis (handler.rotateState).
func (st *stepState) rotateStates(hs []handler, stepOK *stepVerdicts, stacks []*coefStack) {
	rotated := map[*trackedBatch]bool{}
	withHistory := map[*coefStack]bool{} // rotated with its members' history (rotateStack)
	for _, h := range hs {
		if m, ok := h.(*matrixVar); ok && m.batch != nil {
			if !rotated[m.batch] {
				rotated[m.batch] = true
				st.rotateBatchStates(m.batch, stepOK, withHistory)
			}
			continue
		}
		h.rotateState(st.coefficientState(h), stepOK.of(h))
	}
	for _, s := range stacks {
		if !withHistory[s] {
			st.rotateCoefficientStack(s, stepOK)
		}
	}
}

// rotateBatchStates is matrixVar.rotateState for a group tracked as one stack: the members
// whose coefficients have one shape rotate each kind of coefficient state (the base optimizer's
// moments, the gradient history) as one stack, in a few ops for the lot and a slice each.
func (st *stepState) rotateBatchStates(b *trackedBatch, stepOK *stepVerdicts, withHistory map[*coefStack]bool) {
	for _, idx := range groupBy(len(b.members), func(i int) string {
		return b.members[i].coefShape.String() + b.members[i].side.String()
	}) {
		rotation := b.rotation
		if len(idx) < len(b.members) {
			at := make([][]int32, len(idx)) // [k', 1]: one index into axis 0 each
			for j, i := range idx {
				at[j] = []int32{int32(i)}
			}
			rotation = Gather(b.rotation, Const(st.g, at), true) // this shape's members' rotations
		}
		members := make([]*matrixVar, len(idx))
		for j, i := range idx {
			members[j] = b.members[i]
		}
		st.rotateStack(members, rotation, stepOK, withHistory)
	}
}

// rotateStack rotates the coefficient state of members, whose coefficients have one shape, by
// their rotations ([k, r, r]): where they are a coefficient stack, its state too, under one
// verdict a member (withHistory records the stack).
func (st *stepState) rotateStack(members []*matrixVar, rotation *Node, stepOK *stepVerdicts, withHistory map[*coefStack]bool) {
	g, k := st.g, len(members)
	// Each member's state by its kind: the name after its coefficient variable's.
	kinds := map[string][]*model.Variable{}
	var order []string
	for i, m := range members {
		_, coef := model.SplitPath(SvCoefficients.OfVariable(st.root.Scope(), m.v.Path()))
		for _, sv := range st.coefficientState(m) {
			kind := strings.TrimPrefix(sv.Name(), coef)
			if i == 0 {
				order = append(order, kind)
			}
			kinds[kind] = append(kinds[kind], sv)
		}
	}
	aligned := k > 1
	for _, vars := range kinds {
		aligned = aligned && len(vars) == k
	}
	if !aligned { // alone, or members with other optimizer state: one by one
		for i, m := range members {
			m.rotation = Reshape(Slice(rotation, AxisElem(i)), m.rank, m.rank)
			m.rotateState(st.coefficientState(m), stepOK.of(m))
		}
		return
	}
	var stacks []*Node
	var second []bool
	var set []func(*Node) // each stack's writer
	for _, kind := range order {
		vars := kinds[kind]
		values := make([]*Node, k)
		for i, sv := range vars {
			values[i] = sv.NodeValue(g)
		}
		stacks, second = append(stacks, stacked(values)), append(second, upstream.IsSecondMoment(vars[0]))
		set = append(set, func(rotated *Node) {
			for i, part := range unstacked(rotated) {
				vars[i].SetNodeValue(part)
			}
		})
	}
	if s := members[0].stack; s != nil && slices.Equal(s.members, members) {
		withHistory[s] = true
		for _, sv := range st.stackStateInGraph(s) {
			stacks, second = append(stacks, sv.NodeValue(g)), append(second, upstream.IsSecondMoment(sv))
			set = append(set, sv.SetNodeValue)
		}
	}
	for j, rotated := range rotatedStacks(stacks, rotation, members[0].side, second, stepOK.vector(members)) {
		set[j](rotated)
	}
}

// rotateCoefficientStack rotates the base optimizer's state of stack s as rotateStack does a
// group's: one stack a kind, restarting a member from zero after a non-finite step.
func (st *stepState) rotateCoefficientStack(s *coefStack, stepOK *stepVerdicts) {
	state := st.stackStateInGraph(s)
	values, second := make([]*Node, len(state)), make([]bool, len(state))
	for i, sv := range state {
		values[i], second[i] = sv.NodeValue(st.g), upstream.IsSecondMoment(sv)
	}
	for i, rotated := range rotatedStacks(values, s.rotation(st.g), s.members[0].side, second, stepOK.stacks[s]) {
		state[i].SetNodeValue(rotated)
	}
}

// rotatedStacks is the kinds of a stack's coefficient state (values[j], [k, …]; second[j]: a
// second moment) rotated by rotation ([k, r, r]). As rotateState: after a non-finite step (ok
// [k] false), or where any kind holds a non-finite value, a member's state restarts from zero,
// every kind of it (one verdict a member, shared by the kinds).
func rotatedStacks(values []*Node, rotation *Node, side projector.Side, second []bool, ok *Node) []*Node {
	if len(values) == 0 {
		return nil
	}
	var sum *Node
	for _, v := range values {
		if s := ReduceSum(v, 1, 2); sum == nil {
			sum = s
		} else {
			sum = Add(sum, ConvertDType(s, sum.DType()))
		}
	}
	keep := LogicalAnd(ok, IsFinite(sum))
	columns := map[dtypes.DType]*Node{} // a column a dtype (Adam may keep its own)
	out := make([]*Node, len(values))
	for j, v := range values {
		if columns[v.DType()] == nil {
			columns[v.DType()] = projector.KeepColumn(keep, v)
		}
		out[j] = projector.KeepRowsBy(projector.RotateCoefficientsStack(v, ConvertDType(rotation, v.DType()), side, second[j]), columns[v.DType()])
	}
	return out
}
