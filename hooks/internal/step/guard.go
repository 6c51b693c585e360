package step

import (
	"math"
	"slices"

	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gradsub/gradsub/hooks/internal/rules"
	"github.com/gradsub/gradsub/internal/upstream"
)

// This rule's state: entries of the schema (state.go).
var (
	SvSkippedSteps   = rules.NewStateVar("skipped_steps", dtypes.Int64, "guard: steps not applied")
	SvExplodeStreak  = rules.NewStateVar("explode_streak", dtypes.Int32, "guard: consecutive steps skipped for an exploding loss")
	SvLossRestarts   = rules.NewStateVar("loss_restarts", dtypes.Int64, "guard: lasting loss shifts taken as a new level (the smoothed loss restarted)")
	SvDivergenceHold = rules.NewStateVar("divergence_hold", dtypes.Int32, "guard: a loss that exploded in the first steps is held (1), or on trial (-1)")
	SvGuardBuild     = rules.NewStateVar("guard_build", dtypes.Int64, "guard: the step graph that set the hold (a new build lifts it)")
)

// stepCheck is the guard's verdict on one step (scalar bools).
type stepCheck struct {
	ok     *Node // apply the step: its loss and gradients are finite and the loss did not explode
	reseed *Node // the loss stayed above the explosion bound for ExplodePatience steps: the smoothed loss restarts from it
}

// checkStep decides whether this step's update is applied: not if the loss or any gradient is
// non-finite, nor if the loss exploded (above Policy.ExplodeFactor times its smoothed value, from
// the second step on). A skipped step leaves weights, optimizer state and bases as they were; it
// is counted in "skipped_steps" and reported.
//
// In its first steps (DivergenceWindow, or warm-up if longer) a run is judged against the square
// root of the factor. A run that explodes there is diverging, not moving to a new level: its
// learning rate is too high, and every step it takes makes the weights worse (each explosion
// shows the damage the previous step did). The guard holds it: it skips up to DivergenceHold
// steps in a row before it lets one through, so that the weights stay where the explosion left
// them, from which a lower learning rate recovers (TestDivergenceInTheFirstStepsIsHeld). After
// a base optimizer that normalises its step (Adam) the first such explosion is skipped as any
// other, then taken on trial, as stock would take it, and only a second one is held
// (TestAdamSpikeInTheFirstStepsIsTakenOnTrial).
// The hold ends when a step is taken without exploding, and when the step graph is built anew
// (a resumed run, a new learning rate set with -set).
func (st *stepState) checkStep(grads []*Node, hs []handler, smoothedLoss *Node) stepCheck {
	g := st.g
	ok := st.finiteStep(grads, hs)
	skip, newLevel := st.explosionRule(ok, smoothedLoss)
	check := stepCheck{ok: LogicalAnd(ok, LogicalNot(skip)), reseed: newLevel}
	st.bump(SvLossRestarts, newLevel) // said in the Report and by the Monitor: the guard let a new level in
	skipped := st.scalar(SvSkippedSteps)
	old := skipped.NodeValue(g)
	skipped.SetNodeValue(Where(check.ok, old, AddScalar(old, 1)))
	return check
}

// finiteStep says whether the step's loss and gradients are finite.
func (st *stepState) finiteStep(grads []*Node, hs []handler) *Node {
	checked := append([]*Node(nil), grads...)
	// On the direct path the gradient reaching the optimizer is (x·Q)ᵀ·∂y, checked instead of ∂y
	// (a pass over a full activation gradient, some 3% of a transformer step): a NaN or Inf in
	// ∂y reaches it (NaN·0 is NaN), a huge value overflows its sum of squares, and a non-finite
	// input can leave ∂y finite (a saturating activation) and still poison it.
	for _, h := range hs {
		if m, direct := h.(*matrixVar); direct {
			if c := m.directCoefficients(); c != nil {
				checked = append(checked, c)
			}
		}
	}
	return LogicalAnd(IsFinite(st.loss), allFiniteBatched(st.g, checked))
}

// explosionRule judges a finite (ok) step's loss against its smoothed value before the step (the
// loss rule's, ema): skip says the step exploded and is skipped; newLevel that it exploded for
// long enough to be taken as the loss's new level (the smoothed loss restarts from it).
func (st *stepState) explosionRule(ok, ema *Node) (skip, newLevel *Node) {
	g := st.g
	hold := st.loadDivergenceHold()
	exploded, early := Const(g, false), Const(g, false)
	if factor := st.cfg.Policy.ExplodeFactor; factor > 0 {
		early = LessOrEqual(st.t, Const(g, int64(max(st.cfg.WarmUp, rules.DivergenceWindow))))
		bound := Where(LogicalOr(LogicalOr(early, hold.held), hold.onTrial), Scalar(g, ema.DType(), math.Sqrt(factor)), Scalar(g, ema.DType(), factor))
		exploded = LogicalAnd(LogicalAnd(GreaterThan(st.t, Const(g, int64(1))), upstream.Positive(ema)),
			GreaterThan(st.loss, Mul(ema, bound)))
	}
	// A loss that stays high is a new level, not a spike: after ExplodePatience skipped steps in
	// a row (DivergenceHold while a divergence is held) the next one is taken and the smoothed
	// loss restarts from it, so the guard cannot lock training for good (a task or data shift).
	streakVar := st.scalar(SvExplodeStreak)
	streak := Max(streakVar.NodeValue(g), Const(g, int32(0))) // negative: a damaged checkpoint
	patience := Where(hold.held, Const(g, int32(rules.DivergenceHold)), Const(g, int32(rules.ExplodePatience)))
	okExploded := LogicalAnd(ok, exploded)
	newLevel = LogicalAnd(okExploded, GreaterOrEqual(streak, patience))
	st.advanceDivergenceHold(hold, ok, exploded, okExploded, early, newLevel)
	skip = LogicalAnd(exploded, LogicalNot(newLevel))
	streakVar.SetNodeValue(Where(LogicalAnd(ok, skip), AddScalar(streak, 1), upstream.ZeroOf(streak)))
	return skip, newLevel
}

// divergenceHold is the guard's state of a run whose loss exploded in its first steps: held
// (SvDivergenceHold 1: the weights are held where the explosion left them), on trial (-1: an
// explosion was taken as a new level, and a second one is held) or neither (0). Both belong to
// the graph that set them: a new build (another process resuming, a new configuration) starts
// without them.
type divergenceHold struct {
	held, onTrial *Node
}

func (st *stepState) loadDivergenceHold() divergenceHold {
	g := st.g
	buildVar, holdVar := st.scalar(SvGuardBuild), st.scalar(SvDivergenceHold)
	build := Const(g, st.build)
	sameBuild := Equal(buildVar.NodeValue(g), build)
	holdNow := holdVar.NodeValue(g)
	buildVar.SetNodeValue(build)
	return divergenceHold{
		held:    LogicalAnd(sameBuild, GreaterThan(holdNow, Const(g, int32(0)))),
		onTrial: LogicalAnd(sameBuild, LessThan(holdNow, Const(g, int32(0)))),
	}
}

// advanceDivergenceHold sets the hold after a step (ok: finite; exploded; okExploded: both;
// early: in the first steps; newLevel: taken as a new level).
//
// After SGD, whose step grows with the gradient, an explosion in the first steps is held at
// once: the next step would be longer still. After a base optimizer that normalises its step
// (Adam, RMSProp) it is first treated as any explosion (skipped up to ExplodePatience times in a
// row: a bad batch is skipped once, and nothing more happens), then taken as a new level on
// trial: skipping cannot undo the step that caused it, and Adam's first steps, its longest, can
// spike a loss that the next ones bring down (a residual MLP at its best learning rate: 4.7, 36,
// 30, 19, … in stock training; held, it lost 109 of 300 steps). A second explosion on trial is a
// divergence, and the guard holds the weights there. The hold and the trial end at a step taken
// unexploded.
func (st *stepState) advanceDivergenceHold(h divergenceHold, ok, exploded, okExploded, early, newLevel *Node) {
	g := st.g
	earlyExplosion := LogicalAnd(okExploded, early)
	startHold, trial := earlyExplosion, Const(g, false)
	if !st.cfg.BaseIsSGD {
		startHold = LogicalAnd(earlyExplosion, h.onTrial)
		trial = LogicalAnd(newLevel, early)
	}
	hold := Where(LogicalAnd(ok, LogicalNot(exploded)), Const(g, int32(0)),
		Where(LogicalOr(h.held, startHold), Const(g, int32(1)),
			Where(LogicalOr(trial, h.onTrial), Const(g, int32(-1)), Const(g, int32(0)))))
	st.scalar(SvDivergenceHold).SetNodeValue(hold)
}

// allFinite says whether x holds no NaN or Inf and no value whose square overflows, from the sum
// of its squares, taken as x·x in one product (one read of x, no temporary): NaN and ±Inf
// propagate through it, and a single pass is cheap where IsFinite and LogicalAll are two slow
// ones (6% of a transformer step on the Go backend). A value above about 1.8e19 in float32 would
// make Adam's second moment +Inf and freeze its variable for good: such a step is skipped too
// (half precision is checked in float32).
func allFinite(x *Node) *Node {
	if x.DType().IsHalfPrecision() {
		x = ConvertDType(x, dtypes.Float32)
	}
	flat := Reshape(x, x.Shape().Size())
	return IsFinite(DotProduct(flat, flat))
}

// stepGuard remembers every variable's value at the start of the projector's part of a step, so
// that a skipped step can leave the store exactly as it was.
type stepGuard struct {
	scope   *model.Scope
	g       *Graph
	before  map[*model.Variable]*Node
	guarded map[*model.Variable]bool // variables whose update already keeps their value on a bad step
	mark    int
}

func newStepGuard(scope *model.Scope, g *Graph) *stepGuard {
	sg := &stepGuard{scope: scope, g: g, before: map[*model.Variable]*Node{}, guarded: map[*model.Variable]bool{}, mark: len(g.Nodes())}
	for v := range scope.Store().IterVariables() {
		if v.InUseByGraph(g) {
			sg.before[v] = v.NodeValue(g)
		}
	}
	return sg
}

// restoreUnless makes every variable changed since the guard was taken keep its old value when
// ok is false, except the named ones. Variables created since (projector and optimizer state
// on the first build) start from their parameter node, named after the variable's path.
func (sg *stepGuard) restoreUnless(ok *Node, except ...string) {
	for v := range sg.scope.Store().IterVariables() {
		if !v.InUseByGraph(sg.g) || slices.Contains(except, v.Path()) || sg.guarded[v] {
			continue
		}
		old, seen := sg.before[v]
		if !seen {
			for _, n := range sg.g.Nodes()[sg.mark:] {
				if n.Type() == NodeTypeParameter && n.GetParameterName() == v.Path() {
					old = n
					break
				}
			}
		}
		if current := v.NodeValue(sg.g); old != nil && current != old {
			v.SetNodeValue(Where(ok, current, old))
		}
	}
}

// guardCounters are the paths of the guard's own state under root: a skipped step keeps them
// as this step set them, where every other variable is restored.
func guardCounters(root string) []string {
	return []string{SvSkippedSteps.Of(root), SvExplodeStreak.Of(root), SvDivergenceHold.Of(root), SvGuardBuild.Of(root)}
}
