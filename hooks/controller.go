package hooks

import (
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gradsub/gradsub/internal/upstream"
)

// Cause is why a basis was learned or refreshed, as stored in the "last_svd_cause" state
// variable (svLastLearnCause).
type Cause int32

// Refresh causes.
const (
	CauseNone      Cause = 0
	CauseWarmUp    Cause = 1 // a basis learned during (temporal: at the end of) warm-up
	CauseResidual  Cause = 2 // a drift check found the residual above the threshold
	CauseLoss      Cause = 3 // the smoothed loss stopped falling for LossPatience checks
	CauseCurvature Cause = 4 // the curvature along a step jumped above CurvatureFactor times its smoothed magnitude
	CauseRank      Cause = 5 // a variable's rank changed (the bases are re-learned at the new ranks)
)

// String returns a readable name of the cause.
func (c Cause) String() string {
	switch c {
	case CauseWarmUp:
		return "warm-up"
	case CauseResidual:
		return "residual above threshold"
	case CauseLoss:
		return "smoothed loss stopped falling"
	case CauseCurvature:
		return "curvature jumped"
	case CauseRank:
		return "rank changed"
	}
	return "none"
}

// The drift controller runs in the step graph, with no control flow, as Optax's
// reduce_on_plateau runs in a jitted step: its state (controllerState) is loaded once, the step
// measures its signals (loss, residuals, curvature), the Policy decides, and the state advances.
// What it decides is the step's decision: learn the bases now (a burst of fast tracking in matrix
// mode, an eigen-solve in temporal mode), and why.

// controllerState is the drift controller's state, loaded once per step; a rule's variables
// exist only where the rule is on (nil otherwise).
type controllerState struct {
	lossEMA, bestLoss, plateau *model.Variable // the loss rule's smoothing and patience
	freshPending               *model.Variable // the residual rule: the next check records fresh residuals
	curvaturePeak, lastPeak    *model.Variable // the curvature rule: the peak since the last check, and at it
	learnNext                  *model.Variable // the rank rule: the host changed a rank, learn next step
}

// lossSignal is the smoothed loss after this step and its progress.
type lossSignal struct {
	ema, best         *Node
	plateau           *Node // checks without progress before this step
	improved          *Node // the smoothed loss is below the best by LossMinImprovement
	plateauAfterCheck *Node // the plateau count if this step is a check
}

// decision is what the controller decided this step (scalar bools, but maxResidual and checks).
type decision struct {
	driftDecision       // the Policy's rules at a check
	byRank        *Node // a rank change asks for the bases to be learned
	learnNow      *Node // the bases are learned this step
	maxResidual   *Node // the largest residual among the projected variables (loss dtype)
	checks        *Node // drift checks run, this one included (int64)
}

func (st *stepState) checks() bool { return st.cfg.policy.CheckEvery > 0 }

// adaptive says whether the rank rule runs.
func (st *stepState) adaptive() bool {
	return st.checks() && st.cfg.policy.adaptive(st.cfg.rank)
}

// loadController creates or loads the controller's state.
func (st *stepState) loadController() controllerState {
	cs := controllerState{lossEMA: st.scalar(svLossEMA), bestLoss: st.scalar(svBestLossEMA), plateau: st.scalar(svPlateauChecks)}
	if st.checks() {
		cs.freshPending = st.scalar(svFreshPending)
		if st.cfg.policy.CurvatureFactor > 0 {
			cs.curvaturePeak, cs.lastPeak = st.scalar(svCurvaturePeak), st.scalar(svLastCheckPeak)
		}
	}
	if st.adaptive() {
		cs.learnNext = st.scalar(svLearnNext)
	}
	return cs
}

// measureLoss smooths the loss: an EMA seeded with the first loss (and after an explosion's
// reseed); a non-finite loss, a skipped step or no loss at all (accumulated gradients) leaves it.
func (st *stepState) measureLoss(cs controllerState, check stepCheck) lossSignal {
	g := st.g
	ema := cs.lossEMA.NodeValue(g)
	isFirst := LogicalOr(LogicalOr(Equal(st.t, Const(g, int64(1))), check.reseed), LogicalNot(IsFinite(ema)))
	newEMA := Where(isFirst, st.loss, Add(MulScalar(ema, LossEMADecay), MulScalar(st.loss, 1-LossEMADecay)))
	newEMA = Where(check.ok, newEMA, ema)
	if st.noLoss {
		newEMA = ema
	}
	s := lossSignal{ema: newEMA, best: cs.bestLoss.NodeValue(g)}
	s.improved = LessThan(newEMA, MulScalar(s.best, 1-LossMinImprovement))
	s.plateau = Max(cs.plateau.NodeValue(g), Const(g, int32(0)))
	s.plateauAfterCheck = Where(s.improved, upstream.ZeroOf(s.plateau), AddScalar(s.plateau, 1))
	return s
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
	for _, h := range hs {
		resid := ConvertDType(h.residual(), ldt)
		freshVar := st.perVariable(h.variable(), svFreshResidual, shapes.Make(ldt))
		fresh := freshVar.NodeValue(g)
		freshVar.SetNodeValue(Where(LogicalAnd(st.isCheck, pending), resid, fresh))
		s.residual = Max(s.residual, resid)
		drift := Where(pending, Scalar(g, ldt, -1), Sub(resid, fresh))
		if w, warming := h.(warmingUp); warming {
			unlearned := w.unlearned()
			// A basis never learned (zero warm-up gradients) or damaged is replaced at the
			// next check, as if its residual had grown from zero. (A tracked basis moves by
			// itself.) A learned temporal basis whose residual is merely high at its first
			// check is kept: replacing it at every check was measured to cost accuracy (the
			// MLP table's synthetic set, 9 refreshes: −1.2 points) — such a variable needs
			// matrix mode (see the plan).
			drift = Where(unlearned, resid, drift)
		}
		s.drift = Max(s.drift, drift)
	}
	// The curvature signal: the largest jump since the last check (see curvature).
	if cs.curvaturePeak != nil {
		s.curvaturePeak = cs.curvaturePeak.NodeValue(g)
		cs.lastPeak.SetNodeValue(Where(st.isCheck, s.curvaturePeak, cs.lastPeak.NodeValue(g)))
		cs.curvaturePeak.SetNodeValue(Where(st.isCheck, upstream.ZeroOf(s.curvaturePeak), s.curvaturePeak))
	}
	return s
}

// decide applies the Policy's rules to the signals, and adds the steps that learn without a
// trigger (warm-up) and the rank rule's request.
func (st *stepState) decide(cs controllerState, s driftSignals, check stepCheck) decision {
	g := st.g
	off := Const(g, false)
	d := decision{driftDecision: driftDecision{refresh: off, byResidual: off, byLoss: off, byCurvature: off},
		byRank: off, maxResidual: s.residual}
	if st.checks() {
		rules := st.cfg.policy
		if st.noLoss {
			rules.LossPatience = 0 // no loss to watch
		}
		d.driftDecision = rules.decide(s)
	}
	if cs.learnNext != nil { // a rank change (made on the host, AdaptRanks)
		d.byRank = LogicalAnd(GreaterThan(cs.learnNext.NodeValue(g), Const(g, int32(0))), check.ok)
	}
	d.learnNow = LogicalAnd(LogicalOr(LogicalOr(st.learnAt, d.refresh), d.byRank), check.ok)
	return d
}

// advance stores the controller's state after the decision and counts what happened, for
// Report and the Monitor.
func (st *stepState) advance(cs controllerState, loss lossSignal, d *decision) {
	g := st.g
	cs.lossEMA.SetNodeValue(loss.ema)
	if cs.learnNext != nil {
		cs.learnNext.SetNodeValue(Where(d.learnNow, Const(g, int32(0)), cs.learnNext.NodeValue(g)))
	}
	if cs.freshPending != nil {
		afterCheck := Where(st.isCheck, Const(g, int32(0)), cs.freshPending.NodeValue(g))
		cs.freshPending.SetNodeValue(Where(d.learnNow, Const(g, int32(1)), afterCheck))
	}
	// Loss bookkeeping: seeded during warm-up, updated at checks, reset by a refresh.
	newBest := Where(LogicalOr(st.warm, LogicalOr(d.refresh, LogicalAnd(st.isCheck, loss.improved))), loss.ema, loss.best)
	newPlateau := Where(LogicalAnd(st.isCheck, LogicalNot(d.refresh)), loss.plateauAfterCheck, Where(d.refresh, upstream.ZeroOf(loss.plateau), loss.plateau))
	cs.bestLoss.SetNodeValue(newBest)
	cs.plateau.SetNodeValue(newPlateau)

	cause := Where(st.learnAt, Const(g, int32(CauseWarmUp)),
		Where(d.byResidual, Const(g, int32(CauseResidual)),
			Where(d.byLoss, Const(g, int32(CauseLoss)),
				Where(d.byCurvature, Const(g, int32(CauseCurvature)),
					Where(d.byRank, Const(g, int32(CauseRank)), Const(g, int32(CauseNone)))))))
	st.bump(svRefreshes, d.refresh)
	st.bump(svByResidual, d.byResidual)
	st.bump(svByLoss, d.byLoss)
	if st.checks() && st.cfg.policy.CurvatureFactor > 0 {
		st.bump(svByCurvature, d.byCurvature)
	}
	st.bump(svLearnings, d.learnNow)
	d.checks = st.bump(svChecks, st.isCheck)
	lastStep := st.scalar(svLastLearnStep)
	lastStep.SetNodeValue(Where(d.learnNow, st.t, lastStep.NodeValue(g)))
	lastCause := st.scalar(svLastLearnCause)
	lastCause.SetNodeValue(Where(d.learnNow, cause, lastCause.NodeValue(g)))
	lastResid := st.scalar(svLastResidual)
	lastResid.SetNodeValue(Where(st.isCheck, d.maxResidual, lastResid.NodeValue(g)))
}

// control runs the drift controller for one step: load, measure, decide, advance.
func (st *stepState) control(hs []handler, check stepCheck) decision {
	cs := st.loadController()
	loss := st.measureLoss(cs, check)
	d := st.decide(cs, st.measureDrift(cs, hs, check, loss), check)
	st.advance(cs, loss, &d)
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
	g := st.g
	pol := st.cfg.policy
	adaptive := st.adaptive()
	anyTurn, who := Const(g, false), Const(g, int32(0))
	for i, h := range hs {
		turn := Const(g, false) // the matrix subspace takes no full update: its basis tracks
		if st.cfg.mode == Temporal {
			turn = LogicalAnd(pol.fullUpdateTurn(st.isCheck, d.checks, i, len(hs)), check.ok)
		}
		if tv, ok := h.(*temporalVar); ok && pol.FullUpdateEvery > 0 {
			tv.fullTurn = turn // its lift adds the full update on its turn
		}
		anyTurn, who = LogicalOr(anyTurn, turn), Where(turn, Const(g, int32(i)), who)
		if adaptive {
			v := h.variable()
			highVar := st.perVariable(v, svHighChecks, shapes.Make(counterDType))
			lowVar := st.perVariable(v, svLowChecks, shapes.Make(counterDType))
			high, low := pol.rankStreaks(LogicalAnd(st.isCheck, check.ok), h.residual(), highVar.NodeValue(g), lowVar.NodeValue(g))
			// Streaks restart after a basis is learned: the new basis is judged on its own.
			highVar.SetNodeValue(Where(d.learnNow, upstream.ZeroOf(high), high))
			lowVar.SetNodeValue(Where(d.learnNow, upstream.ZeroOf(low), low))
		}
	}
	if pol.FullUpdateEvery > 0 && st.cfg.mode == Temporal {
		st.bump(svFullUpdates, anyTurn)
		last := st.scalar(svLastFullTurn)
		last.SetNodeValue(Where(anyTurn, who, last.NodeValue(g)))
	}
	if adaptive {
		st.scalar(svRankChanges) // kept by the host's rank rule (AdaptRanks)
	}
}

// trackingRate is the rate at which matrix bases move this step: Policy.FastTrackingRate for
// WarmUp steps from the start of training and from each refresh (learnNow), TrackingRate
// otherwise. A refresh is a burst of fast tracking, not a branch: every step runs the same graph.
func (st *stepState) trackingRate(learnNow *Node) *Node {
	g := st.g
	pol := st.cfg.policy
	fastUntil := st.scalar(svFastUntil)
	last := AddScalar(st.t, int64(st.cfg.warmUp-1)) // a burst lasts WarmUp steps at most
	until := Where(learnNow, last, Min(fastUntil.NodeValue(g), last))
	fastUntil.SetNodeValue(until)
	fast := LessOrEqual(st.t, until)
	return Where(fast, Scalar(g, dtypes.Float32, pol.FastTrackingRate), Scalar(g, dtypes.Float32, pol.TrackingRate))
}
