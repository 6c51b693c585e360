package hooks

import (
	"fmt"
	"math"

	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gradsub/gradsub/internal/upstream"
	"github.com/gradsub/gradsub/projector"
)

// The complement's and the lifted step's sizes, from the configuration ([Config.Complement],
// [Config.ComplementScale], [Config.Scale]).

// baseIsSGD says whether the base optimizer is plain SGD, whose step is proportional to the
// gradient; Adam, AdamW and RMSProp normalise it, so its length does not grow with the loss.
func (c Config) baseIsSGD() bool {
	_, sgd := c.base.(*optimizer.SGDConfig)
	return sgd
}

// complementOf is the number of complement directions of a matrix projected at rank on a side of
// sideRows rows: Complement's, or ComplementOf's, at most the side's directions outside the basis.
func (c Config) complementOf(sideRows, rank int) int {
	s := c.complement
	if s == AutoComplement {
		if c.baseIsSGD() {
			return 0 // plain SGD: its full-rank step is state-free already (measured: no gain, examples/mlp)
		}
		s = ComplementOf(sideRows, rank)
	}
	return max(0, min(s, sideRows-rank))
}

// complementFactor is the length of each complement direction's step against the tracked
// directions' average, for a matrix projected at rank on a side of sideRows rows with s complement
// directions: ComplementScale·√((sideRows − rank)/s). The root spreads the length a full-rank
// step would take outside the basis (sideRows − rank directions) over the s drawn, so that the
// complement's whole step does not grow with s; more directions make it less noisy, not longer.
func (c Config) complementFactor(sideRows, rank, s int) float64 {
	return c.complementScale * math.Sqrt(float64(sideRows-rank)/float64(max(s, 1)))
}

// ScaleOf is the multiplier of the lifted step of a matrix projected at rank on a side of
// sideRows rows: Scale's value, or √(sideRows/rank) for Scale(0).
func (c Config) ScaleOf(sideRows, rank int) float64 {
	if c.scale == 0 && rank > 0 {
		return math.Sqrt(float64(sideRows) / float64(rank))
	}
	return c.scale
}

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
			normalized[m] = upstream.NormalisesSteps(st.coefficientState(m))
			ms = append(ms, m)
		}
	}
	for _, group := range matrixGroups(ms, func(m *matrixVar) string {
		return fmt.Sprint(m.compCoef.Shape(), m.scaledStep.Shape(), m.stepCoef.Shape(), normalized[m])
	}) {
		var comps, coefs, steps, lasts []*Node
		var scales []float64
		for _, m := range group {
			comps, coefs, steps = append(comps, m.compCoef), append(coefs, m.stepCoef), append(steps, m.scaledStep)
			scales = append(scales, st.cfg.complementFactor(m.side.Rows(m.m, m.n), m.rank, m.compDirs.Shape().Dim(1)))
			lasts = append(lasts, m.compLen.NodeValue(st.g))
		}
		last := Stack(lasts, 0)
		// A damaged checkpoint's negative or non-finite length restarts the limit instead of
		// locking it.
		last = Where(LogicalAnd(IsFinite(last), GreaterOrEqual(last, upstream.ZeroOf(last))), last, upstream.ZeroOf(last))
		compSteps, lengths := projector.ComplementSteps(comps, coefs, steps, scales, normalized[group[0]], last)
		for i, m := range group {
			m.compStep = compSteps[i]
			m.compLen.SetNodeValue(ConvertDType(Reshape(Slice(lengths, AxisElem(i))), m.compLen.DType()))
		}
	}
}
