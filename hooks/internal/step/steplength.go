package step

import (
	"math"

	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gradsub/gradsub/hooks/internal/rules"
	"github.com/gradsub/gradsub/internal/upstream"
	"github.com/gradsub/gradsub/projector"
)

// This rule's state: entries of the schema (state.go).
var (
	SvStepLogScale = rules.NewStateVar("step_log_scale", dtypes.Float32, "step-length rule: the log of the factor on the tracked directions' step")
	SvPrevGrad     = rules.NewStateVar("coefficients_prev_grad", dtypes.InvalidDType, "gradient history: the last coefficient gradient, in this step's basis")
)

// gradientHistory is the last step's coefficient gradient of each projected variable, rotated
// into this step's basis with the optimizer's moments (it is named as the coefficients' state).
// Two rules read it: the curvature rule (κ along the last step) and the step-length rule (do
// successive gradients agree).
type gradientHistory struct {
	st   *stepState
	vars map[handler]*model.Variable
	prev map[handler]*Node
}

// loadGradientHistory reads the history of every handler, before this step records its own.
func (st *stepState) loadGradientHistory(hs []handler) *gradientHistory {
	gh := &gradientHistory{st: st, vars: map[handler]*model.Variable{}, prev: map[handler]*Node{}}
	for _, h := range hs {
		v := st.perVariable(h.variable(), SvPrevGrad, coefficientShape(h))
		gh.vars[h], gh.prev[h] = v, v.NodeValue(st.g)
	}
	return gh
}

// previous is h's last coefficient gradient (zero before its first step).
func (gh *gradientHistory) previous(h handler) *Node { return gh.prev[h] }

// record stores this step's coefficient gradients for the next step.
func (gh *gradientHistory) record() {
	for h, v := range gh.vars {
		_, grad := h.coefficients()
		v.SetNodeValue(grad)
	}
}

// stepLengthRule sets the factor on each projected matrix's tracked step (ScaleAdaptation): after
// a base optimizer that normalises its steps, a projected step moves a matrix at rank r of d rows
// about √(r/d) as far as an unprojected one. Where the learning rate is low for the model the
// step is then too short to turn the gradient: successive coefficient gradients keep pointing the
// same way (their cosine is positive), and the factor grows, up to √(d/r); where they oppose,
// the step overshoots and the factor shrinks, down to 1. It is a hypergradient rule on the log
// of the factor (Baydin et al. 2018), one scalar per matrix.
type stepLengthRule struct {
	st       *stepState
	matrices []handler // the matrices whose base optimizer normalises its steps
	// After factors: every matrix's factor as one vector, and each matrix's place in it (a
	// stack's steps are lengthened as one: guardedSteps).
	vector *Node
	at     map[handler]int
}

// column is the factors of members ([k]) as a column that scales a stack of their steps of the
// given rank, in one gather (or slice) and one reshape.
func (r *stepLengthRule) column(members []*matrixVar, rank int) *Node {
	idx := make([]int32, len(members))
	contiguous := true
	for i, m := range members {
		idx[i] = int32(r.at[m])
		contiguous = contiguous && idx[i] == idx[0]+int32(i)
	}
	var v *Node
	if contiguous {
		v = projector.SliceAlong(r.vector, 0, int(idx[0]), int(idx[0])+len(members))
	} else {
		v = Gather(r.vector, Reshape(Const(r.st.g, idx), len(members), 1), true)
	}
	return projector.RowColumn(v, rank)
}

// stepLength is the rule for this step, or nil where it is off or has no matrix to lengthen (a
// base optimizer that does not normalise its steps does not shorten them). It reads the base
// optimizer's state, so it is made after the base optimizer's update is built.
func (st *stepState) stepLength(hs []handler) *stepLengthRule {
	if st.cfg.ScaleAdaptation <= 0 || st.cfg.Mode != rules.Matrix {
		return nil
	}
	r := &stepLengthRule{st: st}
	for _, h := range hs {
		if _, isMatrix := h.(*matrixVar); isMatrix && st.normalises(h) {
			r.matrices = append(r.matrices, h)
		}
	}
	if len(r.matrices) == 0 {
		return nil
	}
	return r
}

// factors advances the factor of each of the rule's matrices by this step's agreement between
// its coefficient gradient and the last one (history), and returns the factors. A step the guard
// skips leaves them as they were (stepGuard.restoreUnless). The sums run once per shape of
// coefficients (rowDots), the rest once, on vectors over the matrices.
func (r *stepLengthRule) factors(history *gradientHistory) map[handler]*Node {
	g := r.st.g
	f32 := func(n *Node) *Node { return ConvertDType(n, dtypes.Float32) }
	grads, prevs := make([]*Node, len(r.matrices)), make([]*Node, len(r.matrices))
	for i, h := range r.matrices {
		_, grads[i] = h.coefficients()
		prevs[i] = history.previous(h)
	}
	var (
		order                  []*matrixVar // the matrices in the order of the vectors below
		dots, gradSqs, prevSqs []*Node
		maxLogs                []float32
	)
	for _, group := range sameShapeGroups(grads) {
		gr, pr := rowsOf(grads, group), rowsOf(prevs, group)
		dots, gradSqs, prevSqs = append(dots, f32(rowDots(gr, pr))), append(gradSqs, f32(rowDots(gr, gr))), append(prevSqs, f32(rowDots(pr, pr)))
		for _, i := range group {
			m := r.matrices[i].(*matrixVar)
			order = append(order, m)
			maxLogs = append(maxLogs, float32(math.Log(math.Sqrt(float64(m.side.Rows(m.m, m.n))/float64(m.rank)))))
		}
	}
	joinAll := func(xs []*Node) *Node {
		if len(xs) == 1 {
			return xs[0]
		}
		return Concatenate(xs, 0)
	}
	dot, norms := joinAll(dots), Sqrt(Mul(joinAll(gradSqs), joinAll(prevSqs)))
	zero := upstream.ZeroOf(norms) // scalar constants: a Where or Max broadcasts them, no op
	positive := upstream.Positive(norms)
	cos := Where(positive, Div(dot, Where(positive, norms, upstream.OneOf(norms))), zero)
	cos = Where(IsFinite(cos), cos, zero)
	// A damaged checkpoint's value restarts at 1 for this step's factor already (repairStatistics
	// mends the stored one only at the step's end).
	ms := r.st.matrices
	logVec := ms.vector(SvStepLogScale, dtypes.Float32)
	last := ms.read(logVec, order)
	last = Where(IsFinite(last), last, zero)
	next := Min(Max(Add(last, MulScalar(cos, r.st.cfg.ScaleAdaptation)), zero), Const(g, maxLogs))
	ms.write(logVec, order, next)
	out := make(map[handler]*Node, len(order))
	r.vector, r.at = Exp(next), make(map[handler]int, len(order))
	for i, h := range order {
		out[h] = Reshape(Slice(r.vector, AxisElem(i))) // built only where read: a matrix alone
		r.at[h] = i
	}
	return out
}
