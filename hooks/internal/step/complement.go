package step

import (
	"fmt"

	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gradsub/gradsub/internal/upstream"
	"github.com/gradsub/gradsub/projector"
)

// complementSteps sizes the complement's step of every projected matrix that has one, for its
// lift (matrixVar.compStep), from the base optimizer's guarded coefficient steps (taken): as
// the base optimizer steps (projector.ComplementStep), lengthening by at most 1% a step
// (projector.LimitGrowth), and records each one's length. Matrices whose complement
// coefficients, steps and base optimizer's kind agree are sized together
// (projector.ComplementSteps): a few ops a group instead of some thirty a matrix.
func (st *stepState) complementSteps(hs []handler, taken map[handler]*Node) {
	var ms []*matrixVar
	normalized := map[*matrixVar]bool{}
	for _, h := range hs {
		if m, ok := h.(*matrixVar); ok && m.compCoef != nil {
			m.scaled(taken[h])
			normalized[m] = st.normalises(m)
			ms = append(ms, m)
		}
	}
	for _, group := range matrixGroups(ms, func(m *matrixVar) string {
		return fmt.Sprint(m.compCoef.Shape(), m.scaledStep.Shape(), m.stepCoef.Shape(), normalized[m])
	}) {
		var comps, coefs, steps []*Node
		var scales []float64
		for _, m := range group {
			comps, coefs, steps = append(comps, m.compCoef), append(coefs, m.stepCoef), append(steps, m.scaledStep)
			scales = append(scales, st.cfg.ComplementFactor(m.side.Rows(m.m, m.n), m.rank, m.compDirs.Shape().Dim(1)))
		}
		ms := st.matrices
		last := ConvertDType(ms.read(ms.compLen, group), group[0].stepCoef.DType())
		// A damaged checkpoint's negative or non-finite length restarts the limit instead of
		// locking it.
		last = Where(LogicalAnd(IsFinite(last), GreaterOrEqual(last, upstream.ZeroOf(last))), last, upstream.ZeroOf(last))
		compSteps, lengths := projector.ComplementSteps(comps, coefs, steps, scales, normalized[group[0]], last)
		for i, m := range group {
			m.compStep = compSteps[i]
		}
		ms.write(ms.compLen, group, lengths)
	}
}
