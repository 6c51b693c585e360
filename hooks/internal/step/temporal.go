package step

import (
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gradsub/gradsub/hooks/internal/rules"
	"github.com/gradsub/gradsub/internal/upstream"
	"github.com/gradsub/gradsub/projector"
)

// This rule's state: entries of the schema (state.go).
var (
	SvBasesKept = rules.NewStateVar("bases_kept", dtypes.Int64, "temporal learning: attempts that met a zero or non-finite stack")
	SvExplained = rules.NewStateVar("explained", dtypes.InvalidDType, "temporal basis: explained variance of its snapshots")
	SvRank      = rules.NewStateVar("rank", dtypes.Int32, "temporal basis: its effective rank")
	SvSnapshots = rules.NewStateVar("snapshots", dtypes.InvalidDType, "temporal basis: the ring buffer of recent gradients")
)

// temporalVar projects a variable's flattened gradient on a basis learned from a ring buffer of
// recent gradients. Warm-up steps are full steps of the base optimizer.
type temporalVar struct {
	st        *stepState
	v         *model.Variable
	flat      *Node // the step's full gradient, flattened [P]; zeros if non-finite
	recorded  *Node // the snapshot stack including this step's gradient
	resid     *Node // relative residual of flat against the step's starting basis
	outside   *Node // flat's part outside the starting basis
	insideLen *Node // the length of flat's part inside it
	basis     *model.Variable
	coef      *model.Variable
	explained *model.Variable
	rank      *model.Variable
	valid     *model.Variable
	residVar  *model.Variable
	coefGrad  *Node
	useProj   *Node
	fullTurn  *Node // this step's full-update turn (scalar bool; nil: the rule is off), set by afterLearning
	stored    *Node // the stored basis, zeros if damaged (startBasis)
	learned   *Node // the stored basis was learned and is undamaged (hasBasis)
}

func newTemporal(st *stepState, v *model.Variable, grad *Node) *temporalVar {
	cfg := st.cfg
	g := st.g
	p := v.Shape().Size()
	dtype := stateDType(v)
	h := &temporalVar{
		st: st, v: v,
		basis:     st.perVariable(v, SvBasis, shapes.Make(dtype, p, cfg.TemporalRank)),
		coef:      st.perVariable(v, SvCoefficients, shapes.Make(dtype, cfg.TemporalRank)),
		explained: st.perVariable(v, SvExplained, shapes.Make(dtype)),
		rank:      st.perVariable(v, SvRank, shapes.Make(dtypes.Int32)),
		valid:     st.perVariable(v, SvValid, shapes.Make(dtypes.Int32)),
		residVar:  st.perVariable(v, SvResidual, shapes.Make(dtype)),
	}
	snapshots := st.perVariable(v, SvSnapshots, shapes.Make(dtype, cfg.WarmUp, p))
	// Record this step's gradient in the ring buffer (row (t−1) mod N0). A non-finite gradient is
	// recorded as zeros: it must not reach the SVD.
	flat := ConvertDType(Reshape(grad, p), dtype)
	h.flat = Where(LogicalAll(IsFinite(flat)), flat, upstream.ZeroOf(flat))
	row := ConvertDType(ModScalar(Sub(st.t, Const(g, int64(1))), int64(cfg.WarmUp)), dtypes.Int32)
	h.recorded = DynamicUpdateSlice(snapshots.NodeValue(g), InsertAxes(h.flat, 0), []*Node{row, Const(g, int32(0))})
	snapshots.SetNodeValue(h.recorded)
	if cfg.Policy.CheckEvery == 0 {
		h.resid = ScalarZero(g, dtype) // no checks read it
		return h
	}
	basis := h.startBasis()
	inside := projector.Lift(basis, projector.Coefficients(basis, h.flat))
	h.outside = Sub(h.flat, inside)
	h.insideLen = Sqrt(ReduceAllSum(Square(inside)))
	// As projector.RelativeResidual (which recomputes the projection this reuses): a gradient
	// wholly outside the basis can round to 1 + ulp.
	h.resid = projector.AtMostOne(projector.RelativeLength(h.outside, h.flat))
	return h
}

// startBasis is the stored basis, or zeros where it is not orthonormal on its non-zero columns
// (a damaged checkpoint; NaN included): such a basis counts as never learned, so the variable
// takes full steps and the residual rule replaces it at the next check (see measureDrift).
func (h *temporalVar) startBasis() *Node {
	if h.stored == nil {
		g := h.st.g
		stored := h.basis.NodeValue(g)
		ok := LessThan(projector.OrthonormalityError(stored), Scalar(g, stored.DType(), rules.BasisTolerance))
		h.stored = Where(ok, stored, upstream.ZeroOf(stored))
		valid := h.valid.NodeValue(g)
		h.learned = LogicalAnd(ok, upstream.Positive(valid))
	}
	return h.stored
}

// hasBasis says whether the step starts from a learned, undamaged basis.
func (h *temporalVar) hasBasis() *Node {
	h.startBasis()
	return h.learned
}

// unlearned: a temporal basis is fixed until replaced, so one never learned (zero warm-up
// gradients) or damaged must be replaced by the residual rule at the next check.
func (h *temporalVar) unlearned() *Node { return LogicalNot(h.hasBasis()) }

// rotateState keeps the coefficient state (a temporal basis does not move between learnings),
// and restarts it from zero after a non-finite step or where it holds a non-finite value.
func (h *temporalVar) rotateState(state []*model.Variable, stepOK *Node) {
	g := h.st.g
	for _, sv := range state {
		value := sv.NodeValue(g)
		sv.SetNodeValue(Where(LogicalAnd(stepOK, IsFinite(ReduceAllSum(value))), value, upstream.ZeroOf(value)))
	}
}

func (h *temporalVar) variable() *model.Variable { return h.v }

// residual is the relative residual of this step's full gradient against the current basis,
// read at drift checks. (Matrix mode's residuals are a vector over the matrices: vectors.go.)
func (h *temporalVar) residual() *Node { return h.resid }

func (h *temporalVar) useProjection() *Node { return h.useProj }

func (h *temporalVar) coefficients() (*model.Variable, *Node) { return h.coef, h.coefGrad }

// lift maps the coefficient step back; on its full-update turn (Policy.FullUpdateEvery) it adds
// the gradient's part outside the step's starting basis, scaled to at most the length of the
// step (Fira's norm-based scaling): −outside · ‖step‖ / max(‖outside‖, ‖inside‖).
func (h *temporalVar) lift(step *Node) *Node {
	fullTurn := h.fullTurn
	if scale := h.st.cfg.Scale; scale != 1 { // Validate: > 0 in temporal mode
		step = MulScalar(step, scale)
	}
	delta := projector.Lift(h.basis.NodeValue(h.st.g), step)
	if fullTurn != nil {
		outsideLen := Sqrt(ReduceAllSum(Square(h.outside)))
		scale := Div(Sqrt(ReduceAllSum(Square(step))), projector.SafeDivisor(Max(outsideLen, h.insideLen)))
		scale = Where(fullTurn, Neg(scale), upstream.ZeroOf(scale))
		delta = Add(delta, Mul(h.outside, scale))
	}
	return ConvertDType(Reshape(delta, h.v.Shape().Dimensions...), h.v.DType())
}

// relearn re-learns the basis from the snapshots when learnNow is true (gated, see
// projector.LearnTemporalWhen); an invalid result (zero or non-finite stack) keeps the old one.
func (h *temporalVar) relearn(learnNow *Node) {
	cfg := h.st.cfg
	g := h.st.g
	// The residual of the last check; one outside [0, 1] (a damaged checkpoint) is replaced now.
	old := h.residVar.NodeValue(g)
	inRange := LogicalAnd(GreaterOrEqual(old, upstream.ZeroOf(old)), LessOrEqual(old, upstream.OneOf(old)))
	h.residVar.SetNodeValue(Where(LogicalOr(h.st.isCheck, LogicalNot(inRange)), h.resid, old))
	previous := projector.Temporal{
		Basis:             h.startBasis(),
		SingularValues:    ZerosLike(h.coef.NodeValue(g)),
		ExplainedVariance: h.explained.NodeValue(g),
		Rank:              h.rank.NodeValue(g),
	}
	t := projector.LearnTemporalWhen(learnNow, h.recorded,
		projector.TemporalOptions{Rank: cfg.TemporalRank, VarianceThreshold: cfg.VarianceThreshold}, previous)
	h.basis.SetNodeValue(t.Basis)
	h.explained.SetNodeValue(t.ExplainedVariance)
	h.rank.SetNodeValue(t.Rank)
	h.st.bump(SvBasesKept, LogicalAnd(learnNow, LogicalNot(t.Valid))) // a zero or non-finite stack: the old basis is kept
	oldValid := ConvertDType(h.hasBasis(), dtypes.Int32)
	newValid := Where(t.Valid, upstream.OneOf(oldValid), oldValid)
	h.valid.SetNodeValue(newValid)
	h.coefGrad = projector.Coefficients(t.Basis, h.flat)
	h.useProj = LogicalAnd(LogicalNot(h.st.warm), upstream.Positive(newValid))
}
