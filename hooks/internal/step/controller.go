package step

import (
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gradsub/gradsub/hooks/internal/rules"
)

// This rule's state: entries of the schema (state.go).
var (
	SvFreshPending = rules.NewStateVar("fresh_residual_pending", dtypes.Int32, "residual rule: the next check records the fresh residuals")
	SvRefreshes    = rules.NewStateVar("refreshes", dtypes.Int64, "controller: refreshes, any cause")
	SvByResidual   = rules.NewStateVar("refreshes_residual", dtypes.Int64, "controller: refreshes by the residual rule")
	SvByLoss       = rules.NewStateVar("refreshes_loss", dtypes.Int64, "controller: refreshes by the loss rule")
	SvByCurvature  = rules.NewStateVar("refreshes_curvature", dtypes.Int64, "controller: refreshes by the curvature rule")
	SvChecks       = rules.NewStateVar("checks", dtypes.Int64, "controller: drift checks run")
	SvFullUpdates  = rules.NewStateVar("full_updates", dtypes.Int64, "controller: checks that gave a variable a full update (temporal)")
	SvLastFullTurn = rules.NewStateVar("last_full_update", dtypes.Int32, "controller: which variable (in path order) took the last full update")
	// "svds" counts the steps that learned bases (temporal: an SVD; matrix: a start of fast
	// tracking); the stored name is older than matrix mode and kept for checkpoints.
	SvLearnings      = rules.NewStateVar("svds", dtypes.Int64, "controller: bases learned, warm-up included")
	SvLastLearnStep  = rules.NewStateVar("last_svd_step", dtypes.Int64, "controller: the step of the last learning")
	SvLastLearnCause = rules.NewStateVar("last_svd_cause", dtypes.Int32, "controller: its Cause")
	SvLastResidual   = rules.NewStateVar("last_check_residual", dtypes.InvalidDType, "controller: the largest residual at the last check")
	SvFreshResidual  = rules.NewStateVar("fresh_residual", dtypes.InvalidDType, "residual rule: the residual at the basis's first check")
)

// The drift controller runs in the step graph, with no control flow, as Optax's
// reduce_on_plateau runs in a jitted step: its state (controllerState) is loaded once, the step
// measures its signals (loss, residuals, curvature), the Policy decides, and the state advances.
// What it decides is the step's decision: learn the bases now (a burst of fast tracking in matrix
// mode, an eigen-solve in temporal mode), and why.

// controllerState is the drift controller's own state (the residual rule's), loaded once per
// step; the other rules it combines keep theirs (lossRule, the curvature and rank rules).
type controllerState struct {
	freshPending *model.Variable // the residual rule: the next check records fresh residuals (nil: checks off)
}

// decision is what the controller decided this step (scalar bools, but maxResidual and checks).
type decision struct {
	driftDecision       // the Policy's rules at a check
	byRank        *Node // a rank change asks for the bases to be learned
	learnNow      *Node // the bases are learned this step
	maxResidual   *Node // the largest residual among the projected variables (loss dtype)
	checks        *Node // drift checks run, this one included (int64)
}

func (st *stepState) checks() bool { return st.cfg.Policy.CheckEvery > 0 }

// adaptive says whether the rank rule runs.
func (st *stepState) adaptive() bool {
	return st.checks() && st.cfg.Policy.Adaptive(st.cfg.Rank)
}

// loadController creates or loads the controller's state.
func (st *stepState) loadController() controllerState {
	var cs controllerState
	if st.checks() {
		cs.freshPending = st.scalar(SvFreshPending)
	}
	return cs
}

// measureDrift gathers the residual and curvature signals: the largest relative residual among
// the projected variables, and the largest growth of one since the first check after its basis
// was learned (that check records each variable's fresh residual and reports no growth).
func (st *stepState) measureDrift(cs controllerState, hs []handler, check stepCheck, loss lossSignal) driftSignals {
	g := st.g
	ldt := st.loss.DType()
	s := driftSignals{isCheck: st.isCheck, ok: check.ok, residual: Scalar(g, ldt, 0), plateau: loss.plateauAfterCheck, curvaturePeak: Scalar(g, ldt, 0)}
	if !st.checks() {
		return s
	}
	pending := GreaterThan(cs.freshPending.NodeValue(g), Const(g, int32(0)))
	s.drift = Scalar(g, ldt, -1)
	if ms := st.matrices; ms != nil { // matrix mode: the rule runs on the vectors over the matrices
		all := ms.members
		resid := ConvertDType(ms.read(ms.residual, all), ldt)
		freshVar := ms.vector(SvFreshResidual, ldt)
		fresh := ConvertDType(ms.read(freshVar, all), ldt)
		ms.write(freshVar, all, Where(LogicalAnd(st.isCheck, pending), resid, fresh))
		s.residual = Max(s.residual, ReduceAllMax(resid))
		s.drift = Max(s.drift, Where(pending, Scalar(g, ldt, -1), ReduceAllMax(Sub(resid, fresh))))
		return st.withCurvature(s)
	}
	for _, h := range hs { // temporal mode: a variable at a time
		tv := h.(*temporalVar)
		resid := ConvertDType(tv.residual(), ldt)
		freshVar := st.perVariable(tv.variable(), SvFreshResidual, shapes.Make(ldt))
		fresh := freshVar.NodeValue(g)
		freshVar.SetNodeValue(Where(LogicalAnd(st.isCheck, pending), resid, fresh))
		s.residual = Max(s.residual, resid)
		// A basis never learned (zero warm-up gradients) or damaged is replaced at the next
		// check, as if its residual had grown from zero. (A tracked basis moves by itself.) A
		// learned temporal basis whose residual is merely high at its first check is kept:
		// replacing it at every check was measured to cost accuracy (the MLP table's synthetic
		// set, 9 refreshes: −1.2 points) — such a variable needs matrix mode (see the plan).
		drift := Where(tv.unlearned(), resid, Where(pending, Scalar(g, ldt, -1), Sub(resid, fresh)))
		s.drift = Max(s.drift, drift)
	}
	return st.withCurvature(s)
}

// withCurvature adds the curvature signal: the largest jump since the last check (see curvature).
func (st *stepState) withCurvature(s driftSignals) driftSignals {
	if peak := st.curvaturePeakAtCheck(); peak != nil {
		s.curvaturePeak = peak
	}
	return s
}

// decide applies the Policy's rules to the signals, and adds the steps that learn without a
// trigger (warm-up) and the rank rule's request.
func (st *stepState) decide(s driftSignals, check stepCheck) decision {
	g := st.g
	off := Const(g, false)
	d := decision{driftDecision: driftDecision{refresh: off, byResidual: off, byLoss: off, byCurvature: off},
		byRank: off, maxResidual: s.residual}
	if st.checks() {
		policy := st.cfg.Policy
		if st.noLoss {
			policy.LossPatience = 0 // no loss to watch
		}
		d.driftDecision = decide(policy, s)
	}
	if asked := st.rankChangeAsksToLearn(); asked != nil { // a rank change (made on the host, AdaptRanks)
		d.byRank = LogicalAnd(asked, check.ok)
	}
	d.learnNow = LogicalAnd(LogicalOr(LogicalOr(st.learnAt, d.refresh), d.byRank), check.ok)
	return d
}

// advance stores the controller's state after the decision and counts what happened, for
// Report and the Monitor.
func (st *stepState) advance(cs controllerState, loss lossRule, lossNow lossSignal, d *decision) {
	g := st.g
	loss.advance(lossNow, d)
	st.rankChangeLearned(d.learnNow)
	if cs.freshPending != nil {
		afterCheck := Where(st.isCheck, Const(g, int32(0)), cs.freshPending.NodeValue(g))
		cs.freshPending.SetNodeValue(Where(d.learnNow, Const(g, int32(1)), afterCheck))
	}

	cause := Where(st.learnAt, Const(g, int32(rules.CauseWarmUp)),
		Where(d.byResidual, Const(g, int32(rules.CauseResidual)),
			Where(d.byLoss, Const(g, int32(rules.CauseLoss)),
				Where(d.byCurvature, Const(g, int32(rules.CauseCurvature)),
					Where(d.byRank, Const(g, int32(rules.CauseRank)), Const(g, int32(rules.CauseNone)))))))
	st.bump(SvRefreshes, d.refresh)
	st.bump(SvByResidual, d.byResidual)
	st.bump(SvByLoss, d.byLoss)
	if st.checks() && st.cfg.Policy.CurvatureFactor > 0 {
		st.bump(SvByCurvature, d.byCurvature)
	}
	st.bump(SvLearnings, d.learnNow)
	d.checks = st.bump(SvChecks, st.isCheck)
	lastStep := st.scalar(SvLastLearnStep)
	lastStep.SetNodeValue(Where(d.learnNow, st.t, lastStep.NodeValue(g)))
	lastCause := st.scalar(SvLastLearnCause)
	lastCause.SetNodeValue(Where(d.learnNow, cause, lastCause.NodeValue(g)))
	lastResid := st.scalar(SvLastResidual)
	lastResid.SetNodeValue(Where(st.isCheck, d.maxResidual, lastResid.NodeValue(g)))
}

// control runs the drift controller for one step: load, measure, decide, advance. loss is the
// loss rule, loaded before the guard (which judges the step against its smoothed loss).
func (st *stepState) control(hs []handler, check stepCheck, loss lossRule) decision {
	cs := st.loadController()
	lossNow := loss.measure(check)
	d := st.decide(st.measureDrift(cs, hs, check, lossNow), check)
	st.advance(cs, loss, lossNow, &d)
	return d
}

// afterLearning runs the rules that judge the step's new bases: the rank rule's streaks (each
// variable's residual against GrowAbove and ShrinkBelow, restarted where a basis was learned),
// and, in temporal mode, which variable takes the rotating full update (Policy.FullUpdateEvery):
// each temporal variable is handed its turn, which its lift reads.
func (st *stepState) afterLearning(hs []handler, d decision, check stepCheck) {
	if !st.checks() {
		return
	}
	adaptive := st.adaptive()
	if adaptive {
		st.advanceRankStreaks(hs, d.learnNow, check)
	}
	if st.cfg.Policy.FullUpdateEvery > 0 {
		st.fullUpdateTurns(hs, d, check)
	}
	if adaptive {
		st.keepRankChangeCount()
	}
}

// fullUpdateTurns hands each temporal variable its turn of the rotating full update (its lift
// reads it), and records which variable took the last one. The matrix subspace takes none: its
// basis tracks.
func (st *stepState) fullUpdateTurns(hs []handler, d decision, check stepCheck) {
	g := st.g
	anyTurn, who, temporal := Const(g, false), Const(g, int32(0)), false
	for i, h := range hs {
		tv, ok := h.(*temporalVar)
		if !ok {
			continue
		}
		temporal = true
		turn := LogicalAnd(fullUpdateTurn(st.cfg.Policy, st.isCheck, d.checks, i, len(hs)), check.ok)
		tv.fullTurn = turn
		anyTurn, who = LogicalOr(anyTurn, turn), Where(turn, Const(g, int32(i)), who)
	}
	if temporal {
		st.bump(SvFullUpdates, anyTurn)
		last := st.scalar(SvLastFullTurn)
		last.SetNodeValue(Where(anyTurn, who, last.NodeValue(g)))
	}
}
