package step

import (
	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gradsub/gradsub/hooks/internal/rules"
	"github.com/gradsub/gradsub/internal/upstream"
)

// This rule's state: entries of the schema (state.go).
var (
	SvCurvature      = rules.NewStateVar("curvature", dtypes.InvalidDType, "curvature rule: the last κ measured")
	SvCurvatureEMA   = rules.NewStateVar("curvature_ema", dtypes.InvalidDType, "curvature rule: smoothed |κ|")
	SvCurvatureCount = rules.NewStateVar("curvature_measurements", dtypes.Int64, "curvature rule: κ measured so far")
	SvComparable     = rules.NewStateVar("curvature_comparable", dtypes.Int32, "curvature rule: the next step can measure κ")
	SvCurvaturePeak  = rules.NewStateVar("curvature_peak", dtypes.InvalidDType, "curvature rule: the largest jump since the last check")
	SvLastCheckPeak  = rules.NewStateVar("last_check_curvature_peak", dtypes.InvalidDType, "curvature rule: the peak at the last check")
	SvPrevStep       = rules.NewStateVar("coefficients_prev_step", dtypes.InvalidDType, "curvature rule: the last coefficient step")
)

// curvature measures κ = ⟨c_t − c_{t−1}, s_{t−1}⟩ / ‖s_{t−1}‖² over every projected variable's
// coefficients (c the coefficient gradient, s the coefficient step): as the bases are
// orthonormal it is the curvature of the loss along the previous weight step. It is measured
// only when both steps used the same bases; its smoothed magnitude and the largest jump since
// the last check (|κ| over that magnitude, after CurvatureWarmUp measurements) are state.
func (st *stepState) curvature(hs []handler, steps map[handler]*Node, history *gradientHistory, learnNow *Node) {
	g := st.g
	ldt := st.loss.DType()
	projecting := Const(g, true)
	var grads, prevGrads, prevSteps []*Node // per handler: c_t, c_{t−1} and s_{t−1}
	for _, h := range hs {
		_, grad := h.coefficients()
		prevStep := st.perVariable(h.variable(), SvPrevStep, coefficientShape(h))
		grads, prevGrads = append(grads, grad), append(prevGrads, history.previous(h))
		prevSteps = append(prevSteps, prevStep.NodeValue(g))
		prevStep.SetNodeValue(steps[h])
		if w, warming := h.(warmingUp); warming {
			projecting = LogicalAnd(projecting, w.useProjection())
		}
	}
	// The sums run once per group of joinable coefficients (joinGroups), not per variable.
	var num, den *Node
	for _, group := range joinGroups(prevSteps, joinLimit) {
		s := flat(joined(prevSteps, group))
		// c_t − c_{t−1} of the group as one difference of the joined gradients, which the
		// step-length rule joins too (one concatenation for both: concatenated).
		change := flat(Sub(joined(grads, group), joined(prevGrads, group)))
		n, d := ConvertDType(DotProduct(change, s), ldt), ConvertDType(DotProduct(s, s), ldt)
		if num == nil {
			num, den = n, d
		} else {
			num, den = Add(num, n), Add(den, d)
		}
	}
	if num == nil { // no projected variable
		num, den = ScalarZero(g, ldt), ScalarZero(g, ldt)
	}
	comparableVar := st.scalar(SvComparable)
	comparable := GreaterThan(comparableVar.NodeValue(g), Const(g, int32(0)))
	keeps := LogicalNot(learnNow) // this step keeps its bases
	measured := LogicalAnd(LogicalAnd(comparable, keeps), upstream.Positive(den))
	measured = LogicalAnd(measured, projecting)
	// The next step is comparable with this one if this one projected and kept its bases.
	comparableVar.SetNodeValue(ConvertDType(LogicalAnd(projecting, keeps), dtypes.Int32))

	kappa := Where(measured, Div(num, Where(measured, den, upstream.OneOf(den))), upstream.ZeroOf(den))
	kappaVar := st.scalar(SvCurvature)
	kappaVar.SetNodeValue(Where(measured, kappa, kappaVar.NodeValue(g)))
	emaVar := st.scalar(SvCurvatureEMA)
	countVar := st.scalar(SvCurvatureCount)
	peakVar := st.scalar(SvCurvaturePeak)
	ema, count := emaVar.NodeValue(g), countVar.NodeValue(g)
	mag := Abs(kappa)
	seeded := GreaterOrEqual(count, Const(g, int64(rules.CurvatureWarmUp)))
	positive := upstream.Positive(ema)
	ratio := Where(LogicalAnd(seeded, positive), Div(mag, Where(positive, ema, upstream.OneOf(ema))), upstream.ZeroOf(ema))
	peakVar.SetNodeValue(Where(measured, Max(peakVar.NodeValue(g), ratio), peakVar.NodeValue(g)))
	newEMA := Where(Equal(count, Const(g, int64(0))), mag, Add(MulScalar(ema, rules.CurvatureEMADecay), MulScalar(mag, 1-rules.CurvatureEMADecay)))
	emaVar.SetNodeValue(Where(measured, newEMA, ema))
	countVar.SetNodeValue(Where(measured, AddScalar(count, 1), count))
}

// curvaturePeakAtCheck is the curvature rule's signal to the controller: the largest jump since
// the last check (nil where the rule is off). At a check it is recorded (the Report's
// CurvaturePeak) and restarts from zero.
func (st *stepState) curvaturePeakAtCheck() *Node {
	if !st.checks() || st.cfg.Policy.CurvatureFactor <= 0 {
		return nil
	}
	g := st.g
	peakVar, lastPeak := st.scalar(SvCurvaturePeak), st.scalar(SvLastCheckPeak)
	peak := peakVar.NodeValue(g)
	lastPeak.SetNodeValue(Where(st.isCheck, peak, lastPeak.NodeValue(g)))
	peakVar.SetNodeValue(Where(st.isCheck, upstream.ZeroOf(peak), peak))
	return peak
}
