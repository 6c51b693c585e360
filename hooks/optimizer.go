package hooks

import (
	"fmt"
	"path"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/model/initializer"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gomlx/gomlx/support/exceptions"
	"github.com/gradsub/gradsub/projector"
)

// gradientOptimizer is what the wrapper needs of its base: GoMLX's optimizers implement it (it is
// train.OptimizeWithGradients, used for gradient accumulation).
type gradientOptimizer interface {
	UpdateGraphWithGradients(scope *model.Scope, grads []*Node, lossDType dtypes.DType)
}

// Cause is why a basis was learned or refreshed, as stored in the "last_svd_cause" state
// variable.
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

// Optimizer is the gradient-subspace optimizer; it implements optimizer.Interface.
type Optimizer struct {
	cfg       Config
	configErr error

	mu         sync.Mutex
	plan       []PlanEntry // as of the last graph built
	stateRoot  string      // absolute scope of the state variables
	lastGraph  *Graph
	marks      GraphMarks
	roots      []*Node
	builds     int
	ranks      map[string]int // variable path → rank, where the rank rule changed it
	store      *model.Store   // the store of the first step graph: one optimizer serves one trainer
	paramsRead bool           // FromScope's params were read again from the training scope
}

// GraphMarks are node-count boundaries in the last step graph built: nodes before Forward were
// built by the model and loss; up to Gradient by back-propagation and the projection of the
// gradients; the rest by the base optimizer, the lift and the drift bookkeeping.
type GraphMarks struct {
	Forward, Gradient int
}

var _ optimizer.Interface = (*Optimizer)(nil)

// Builds returns how many step graphs the optimizer has built: one per compilation of the
// trainer's step (per input shape). Phase switches and refreshes add none.
func (o *Optimizer) Builds() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.builds
}

// StepGraph returns the last step graph built and the marks splitting it, for FLOP accounting;
// nil before the first step.
func (o *Optimizer) StepGraph() (*Graph, GraphMarks) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.lastGraph, o.marks
}

// Config returns a copy of the optimizer's configuration (a pointer, so that its methods, such
// as Validate, can be called on it directly).
func (o *Optimizer) Config() *Config {
	c := o.cfg
	return &c
}

// readParams reads the params again from the training scope at the first build, when the
// configuration came from FromScope: params set after it (a -set flag parsed later) count.
func (o *Optimizer) readParams(scope *model.Scope) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.cfg.fromScope || o.paramsRead {
		return
	}
	o.paramsRead = true
	cfg := o.cfg
	cfg.paramErr = nil
	cfg.FromScope(scope)
	// The training scope's params are authoritative: they replace the configuration, and its
	// error, that Done saw.
	o.cfg, o.configErr = cfg, cfg.Validate()
}

// Clear deletes the projector's state and the base optimizer's.
func (o *Optimizer) Clear(scope *model.Scope) error {
	if err := o.cfg.base.Clear(scope); err != nil {
		return err
	}
	return scope.At(StateScope).DeleteVariablesInScope()
}

// record keeps what FLOP accounting and reports need of the graph just built.
func (o *Optimizer) record(g *Graph, marks GraphMarks, plan []PlanEntry, stateRoot string, loss *Node) {
	var roots []*Node
	if loss != nil {
		roots = append(roots, loss)
	}
	store := model.GetStore(g)
	for v := range store.IterVariables() {
		if v.ChangedInGraph(g) {
			roots = append(roots, v.NodeValue(g))
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.lastGraph, o.marks, o.roots = g, marks, roots
	o.plan, o.stateRoot = plan, stateRoot
	o.builds++
}

// UpdateGraph implements optimizer.Interface: it builds the gradient, projection, drift check and
// update of one training step.
func (o *Optimizer) UpdateGraph(scope *model.Scope, g *Graph, loss *Node) {
	o.readParams(scope)
	if o.configErr != nil {
		exceptions.Panicf("%v", o.configErr)
	}
	forwardMark := len(g.Nodes())
	if !o.cfg.enabled {
		o.cfg.base.UpdateGraph(scope, g, loss)
		o.record(g, GraphMarks{Forward: forwardMark, Gradient: len(g.Nodes())}, nil, "", loss)
		return
	}
	if !loss.IsScalar() {
		exceptions.Panicf("hooks.Subspace: the loss must be a scalar, got shape %s", loss.Shape())
	}
	trainables := o.trainablesOf(scope, g)
	if len(trainables) == 0 {
		exceptions.Panicf("hooks.Subspace: no trainable variable is used by the model: nothing to optimize")
	}
	o.buildStep(scope, g, trainables, loss, nil, forwardMark)
}

// UpdateGraphWithGradients implements train.OptimizeWithGradients, which GoMLX's
// Trainer.AccumulateGradients uses: the trainer has built (and accumulated) the full gradients,
// one per trainable variable in use, in the store's order. The direct path has nothing to skip
// then: every matrix-projected variable projects its full gradient (the post-hoc path, said in
// the plan). There is no loss either, so the rules that read it (the explosion guard, the loss
// plateau) are off; non-finite gradients still skip the step.
func (o *Optimizer) UpdateGraphWithGradients(scope *model.Scope, grads []*Node, lossDType dtypes.DType) {
	o.readParams(scope)
	if o.configErr != nil {
		exceptions.Panicf("%v", o.configErr)
	}
	if len(grads) == 0 {
		exceptions.Panicf("hooks.Subspace: UpdateGraphWithGradients got no gradients: nothing to optimize")
	}
	g := grads[0].Graph()
	if !o.cfg.enabled {
		o.cfg.base.(gradientOptimizer).UpdateGraphWithGradients(scope, grads, lossDType)
		o.record(g, GraphMarks{}, nil, "", nil)
		return
	}
	trainables := o.trainablesOf(scope, g)
	if len(trainables) != len(grads) {
		exceptions.Panicf("hooks.Subspace: UpdateGraphWithGradients got %d gradients for %d trainable variables in use: they must pair one to one, in the store's order", len(grads), len(trainables))
	}
	o.buildStep(scope, g, trainables, Scalar(g, lossDType, 0), grads, 0)
}

// trainablesOf claims the scope's store for this optimizer and returns the trainable variables
// the graph uses, in the store's order (the order the base optimizer, and the trainer's
// gradients, pair with them). Plans, rank decisions and FLOP records are per optimizer: shared
// by two trainers they would leak from one model into the other, so a second store is an error.
func (o *Optimizer) trainablesOf(scope *model.Scope, g *Graph) []*model.Variable {
	if !o.claimStore(scope) {
		exceptions.Panicf("hooks.Subspace: this optimizer already trains another store's variables: create one optimizer (hooks.Subspace(...).Done()) per trainer")
	}
	var trainables []*model.Variable
	for v := range scope.IterVariables() {
		if v.Trainable && v.InUseByGraph(g) {
			trainables = append(trainables, v)
		}
	}
	return trainables
}

// claimStore records the store this optimizer trains; false if it already trains another.
func (o *Optimizer) claimStore(scope *model.Scope) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.store == nil {
		o.store = scope.Store()
	}
	return o.store == scope.Store()
}

// buildStep builds a training step's projection, drift control and update. With grads nil it
// back-propagates from loss itself, taking the direct path where it can; otherwise grads are
// the full gradients of trainables (gradient accumulation) and loss is a stand-in of its dtype.
func (o *Optimizer) buildStep(scope *model.Scope, g *Graph, trainables []*model.Variable, loss *Node, grads []*Node, forwardMark int) {
	given := grads != nil
	plan, products := o.makePlan(scope, g, trainables, !given)

	// Back-propagation: to each variable's value, except on the direct path, where the gradient is
	// taken at the product's output ∂y and the product's VJP skips ∂W (see vjp.go).
	if !given {
		wrt := make([]*Node, len(trainables))
		for i, v := range trainables {
			wrt[i] = v.NodeValue(g)
			if p := products[i]; p != nil {
				markDirect(g, p)
				wrt[i] = p.node
			}
		}
		grads = Gradient(loss, wrt...)
	}

	guard := newStepGuard(scope, g)
	st := o.newStepState(scope, g, loss)
	st.noLoss = given
	var handlers []handler
	for i, v := range trainables {
		var h handler
		switch plan[i].Path {
		case PathTemporal:
			h = newTemporal(st, v, grads[i])
		case PathDirect:
			h = newMatrixDirect(st, v, products[i], grads[i], plan[i].Side, plan[i].Rank)
		case PathPostHoc:
			h = newMatrixPostHoc(st, v, grads[i], plan[i].Side, plan[i].Rank, plan[i].view)
		default:
			continue
		}
		handlers = append(handlers, h)
	}
	// Handlers go by path: the store's order changes when a checkpoint loads, and the rotation
	// of full updates and the order of sums over variables must not.
	slices.SortFunc(handlers, func(a, b handler) int { return strings.Compare(a.variable().Path(), b.variable().Path()) })
	// On the direct path the gradient taken is the product's output gradient ∂y, a full
	// activation gradient: what reaches the update is its coefficient (checked by checkStep),
	// and what reaches earlier layers is checked at their own gradients.
	var checked []*Node
	for i, grad := range grads {
		if products[i] == nil {
			checked = append(checked, grad)
		}
	}
	st.checkStep(checked, handlers)
	st.driftAndLearn(handlers)
	gradientMark := len(g.Nodes())
	st.applyBase(trainables, grads, handlers, guard)
	guard.restoreUnless(st.ok, st.counterPath("skipped_steps"), st.counterPath("explode_streak"))
	st.repairStatistics()
	o.record(g, GraphMarks{Forward: forwardMark, Gradient: gradientMark}, plan, st.root.Scope(), loss)
}

// stepState holds what one step graph shares across the projected variables.
type stepState struct {
	o     *Optimizer
	scope *model.Scope
	root  *model.Scope // the state scope
	g     *Graph
	loss  *Node

	t       *Node // this step's number, 1-based (int64)
	noLoss  bool  // the trainer gave gradients and no loss (UpdateGraphWithGradients): its rules are off
	ok      *Node // the step's loss and gradients are finite and the loss did not explode
	reseed  *Node // the loss stayed above the explosion bound for ExplodePatience steps: the smoothed loss restarts
	warm    *Node // t ≤ WarmUp
	isCheck *Node // a drift check runs this step
	learnAt *Node // steps that learn without a trigger: temporal t == WarmUp; matrix t ≤ WarmUp

	learnNow *Node             // the bases are learned this step (decided by driftAndLearn)
	fullTurn map[handler]*Node // the full-update rule picks this variable this step
}

func (o *Optimizer) newStepState(scope *model.Scope, g *Graph, loss *Node) *stepState {
	root := scope.At(StateScope)
	st := &stepState{o: o, scope: scope, root: root, g: g, loss: loss}
	stepVar := st.counter("step", dtypes.Int64)
	// Counters are clamped where a damaged checkpoint could make them lock a rule (here: a
	// negative step count would keep warm-up going).
	st.t = AddScalar(Max(stepVar.NodeValue(g), Const(g, int64(0))), 1)
	stepVar.SetNodeValue(st.t)
	n0 := int64(o.cfg.warmUp)
	st.warm = LessOrEqual(st.t, Const(g, n0))
	if o.cfg.mode == Temporal {
		st.learnAt = Equal(st.t, Const(g, n0))
	} else {
		st.learnAt = Equal(st.t, Const(g, int64(1))) // warm-up's fast tracking starts
	}
	if k := int64(o.cfg.policy.CheckEvery); k > 0 {
		sinceWarm := Sub(st.t, Const(g, n0))
		st.isCheck = LogicalAnd(GreaterThan(sinceWarm, Const(g, int64(0))),
			Equal(ModScalar(sinceWarm, k), Const(g, int64(0))))
	} else {
		st.isCheck = Const(g, false)
	}
	return st
}

// counterPath is the full path of a counter of the state scope.
func (st *stepState) counterPath(name string) string { return path.Join(st.root.Scope(), name) }

// countKept counts learning attempts that found a zero or non-finite gradient and kept the
// previous basis.
func (st *stepState) countKept(kept *Node) { st.bump("bases_kept", kept) }

// counter returns a scalar non-trainable state variable (zero-initialised) in the state scope.
func (st *stepState) counter(name string, dtype dtypes.DType) *model.Variable {
	return st.root.WithInitializer(initializer.Zero).VariableWithShape(name, shapes.Make(dtype)).SetTrainable(false)
}

// varState returns a non-trainable, zero-initialised state variable of a projected variable,
// under the variable's own scope inside the state scope ("/subspace/dense_0/weights_basis").
// Checkpoints don't keep the Trainable flag, so it is set again each time.
func (st *stepState) varState(v *model.Variable, name string, shape shapes.Shape) *model.Variable {
	scopePath := path.Join(st.scope.Scope(), StateScope, v.Scope())
	full := path.Join(scopePath, v.Name()+"_"+name)
	// A resumed store may hold the state of another configuration: say which options differ
	// instead of GoMLX's shape error.
	if old := st.scope.Store().GetVariable(full); old != nil && !old.Shape().Equal(shape) {
		exceptions.Panicf("hooks.Subspace: the store holds %s with shape %s (from a checkpoint), but this configuration needs %s: "+
			"its Mode, Rank, Side or WarmUp differ from the checkpoint's. Resume with the checkpoint's options, or delete the projector's state (Optimizer.Clear) to learn new bases",
			full, old.Shape(), shape)
	}
	vs := st.scope.Store().Scope(scopePath)
	return vs.WithInitializer(initializer.Zero).VariableWithShape(v.Name()+"_"+name, shape).SetTrainable(false)
}

// tracker is a handler whose basis moves every step (the matrix subspace). The optimizer moves
// the bases of one shape together (learnAll): trackInputs gives a basis and its tracking
// products, tracked takes the next basis and the step's residual, and rotateState carries the
// coefficient-shaped state into the new basis after the base optimizer's update (and restarts it
// from zero when the step it made was not finite: the state was poisoned).
type tracker interface {
	trackInputs() (basis, power, sketch *Node)
	tracked(next, resid *Node)
	rotateState(state []*model.Variable, stepOK *Node)
}

// selfGated is a handler that gates its own learning (temporal: an eigen-solve of its snapshots).
type selfGated interface {
	// learn applies the step's decision (learnNow, scalar bool): the basis, its statistics and
	// the coefficient gradient of the step.
	learn(learnNow *Node)
}

// learnAll applies the step's learning: trackers move their bases at rate (scalar), the bases of
// one shape stacked into one batch of products; the others learn where learnNow (scalar bool).
func (st *stepState) learnAll(hs []handler, learnNow, rate *Node) {
	groups := map[string][]tracker{}
	var keys []string // in handler order: the graph is the same build after build
	for _, h := range hs {
		switch h := h.(type) {
		case tracker:
			basis, _, sketch := h.trackInputs()
			key := basis.Shape().String() + sketch.Shape().String()
			if _, seen := groups[key]; !seen {
				keys = append(keys, key)
			}
			groups[key] = append(groups[key], h)
		case selfGated:
			h.learn(learnNow)
		default:
			panic("hooks: a handler must be a tracker or selfGated")
		}
	}
	maxRate := st.o.cfg.policy.FastTrackingRate
	for _, key := range keys {
		group := groups[key]
		if len(group) == 1 {
			basis, power, sketch := group[0].trackInputs()
			group[0].tracked(projector.TrackBasis(basis, power, rate, maxRate), projector.SketchResidual(basis, sketch))
			continue
		}
		var bases, powers, sketches []*Node
		for _, tr := range group {
			basis, power, sketch := tr.trackInputs()
			bases, powers, sketches = append(bases, basis), append(powers, power), append(sketches, sketch)
		}
		basis := Stack(bases, 0)
		next := projector.TrackBasis(basis, Stack(powers, 0), rate, maxRate)
		resid := projector.SketchResidual(basis, Stack(sketches, 0))
		for i, tr := range group {
			tr.tracked(Squeeze(Slice(next, AxisElem(i)), 0), Reshape(Slice(resid, AxisElem(i))))
		}
	}
}

// handler is one projected variable's part of the step.
type handler interface {
	variable() *model.Variable
	// residual is the relative residual of this step's full gradient against the current basis;
	// it is read at drift checks only.
	residual() *Node
	// coefficients is the coefficient variable the base optimizer updates, and its gradient.
	coefficients() (*model.Variable, *Node)
	// useProjection (scalar bool) says whether this step's update is the lifted coefficient step;
	// otherwise (temporal warm-up) the base optimizer updates the variable itself.
	useProjection() *Node
	// fullUpdateInBase says whether the base optimizer also sees the variable itself (temporal
	// warm-up needs it; the matrix subspace never keeps full-size optimizer state).
	fullUpdateInBase() bool
	// lift maps a coefficient step to the variable's shape; where fullTurn (nil: never) it adds
	// the full-update rule's step (Policy.FullUpdateEvery).
	lift(step, fullTurn *Node) *Node
	// stepCoefficients is the coefficient gradient computed outside back-propagation (direct
	// path), to be checked for finiteness; nil if there is none.
	stepCoefficients() *Node
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
// ok is false, except the named counters. Variables created since (projector and optimizer state
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

// driftAndLearn applies the drift controller's in-graph rules (see Policy) and learns the bases
// where due.
func (st *stepState) driftAndLearn(hs []handler) {
	pol := &st.o.cfg.policy
	g := st.g
	ldt := st.loss.DType()

	// Smoothed loss: an EMA, seeded with the first loss; a non-finite loss is ignored.
	emaVar := st.scalarState("loss_ema", ldt)
	bestVar := st.scalarState("best_loss_ema", ldt)
	plateauVar := st.counter("plateau_checks", dtypes.Int32)
	ema := emaVar.NodeValue(g)
	isFirst := LogicalOr(LogicalOr(Equal(st.t, Const(g, int64(1))), st.reseed), LogicalNot(IsFinite(ema)))
	newEMA := Where(isFirst, st.loss, Add(MulScalar(ema, LossEMADecay), MulScalar(st.loss, 1-LossEMADecay)))
	newEMA = Where(st.ok, newEMA, ema)
	if st.noLoss {
		newEMA = ema
	}
	emaVar.SetNodeValue(newEMA)

	// Loss signal: at a check, progress means the EMA fell below the best by LossMinImprovement.
	best := bestVar.NodeValue(g)
	improved := LessThan(newEMA, MulScalar(best, 1-LossMinImprovement))
	plateau := Max(plateauVar.NodeValue(g), Const(g, int32(0)))
	plateauAfterCheck := Where(improved, ZerosLike(plateau), AddScalar(plateau, 1))

	// Residual signals: the largest relative residual among the projected variables, and the
	// largest growth of one since the first check after its basis was learned (that check
	// records each variable's fresh residual and reports no growth).
	checks := pol.CheckEvery > 0 // without checks no rule can fire: none of their signals is built
	maxResid := Scalar(g, ldt, 0)
	off := Const(g, false)
	d := driftDecision{refresh: off, byResidual: off, byLoss: off, byCurvature: off}
	var freshPending *model.Variable
	if checks {
		freshPending = st.counter("fresh_residual_pending", dtypes.Int32)
		pending := GreaterThan(freshPending.NodeValue(g), Const(g, int32(0)))
		maxDrift := Scalar(g, ldt, -1)
		for _, h := range hs {
			resid := ConvertDType(h.residual(), ldt)
			freshVar := st.varState(h.variable(), "fresh_residual", shapes.Make(ldt))
			fresh := freshVar.NodeValue(g)
			freshVar.SetNodeValue(Where(LogicalAnd(st.isCheck, pending), resid, fresh))
			maxResid = Max(maxResid, resid)
			drift := Where(pending, Scalar(g, ldt, -1), Sub(resid, fresh))
			if tv, ok := h.(*temporalVar); ok {
				// A temporal basis is fixed until replaced: one that was never learned (zero
				// warm-up gradients) or was damaged is replaced at the next check, as if its
				// residual had grown from zero. (A tracked basis moves by itself.) A learned
				// basis whose residual is merely high at its first check is kept: replacing it
				// at every check was measured to cost accuracy (the MLP table's synthetic set,
				// 9 refreshes: −1.2 points) — such a variable needs matrix mode (see the plan).
				drift = Where(LogicalNot(tv.hasBasis()), resid, drift)
			}
			maxDrift = Max(maxDrift, drift)
		}

		// Curvature signal: the largest jump since the last check (see applyBase).
		peak := Scalar(g, ldt, 0)
		if pol.CurvatureFactor > 0 {
			peakVar := st.scalarState("curvature_peak", ldt)
			peak = peakVar.NodeValue(g)
			lastPeak := st.scalarState("last_check_curvature_peak", ldt)
			lastPeak.SetNodeValue(Where(st.isCheck, peak, lastPeak.NodeValue(g)))
			peakVar.SetNodeValue(Where(st.isCheck, ZerosLike(peak), peak))
		}
		rules := *pol
		if st.noLoss {
			rules.LossPatience = 0 // no loss to watch
		}
		d = rules.decide(driftSignals{isCheck: st.isCheck, ok: st.ok, residual: maxResid, drift: maxDrift,
			plateau: plateauAfterCheck, curvaturePeak: peak})
	}

	// A rank change (made on the host, AdaptRanks) asks for the bases to be learned next step.
	adaptive := checks && pol.adaptive(st.o.cfg.rank)
	byRank := off
	var learnNextVar *model.Variable
	if adaptive {
		learnNextVar = st.counter("learn_next", dtypes.Int32)
		byRank = LogicalAnd(GreaterThan(learnNextVar.NodeValue(g), Const(g, int32(0))), st.ok)
	}
	learnNow := LogicalAnd(LogicalOr(LogicalOr(st.learnAt, d.refresh), byRank), st.ok)
	if adaptive {
		learnNextVar.SetNodeValue(Where(learnNow, Const(g, int32(0)), learnNextVar.NodeValue(g)))
	}
	if checks {
		afterCheck := Where(st.isCheck, Const(g, int32(0)), freshPending.NodeValue(g))
		freshPending.SetNodeValue(Where(learnNow, Const(g, int32(1)), afterCheck))
	}

	// Loss bookkeeping: seeded during warm-up, updated at checks, reset by a refresh.
	newBest := Where(LogicalOr(st.warm, LogicalOr(d.refresh, LogicalAnd(st.isCheck, improved))), newEMA, best)
	newPlateau := Where(LogicalAnd(st.isCheck, LogicalNot(d.refresh)), plateauAfterCheck, Where(d.refresh, ZerosLike(plateau), plateau))
	bestVar.SetNodeValue(newBest)
	plateauVar.SetNodeValue(newPlateau)

	// Counters and the last event, read by the host-side Monitor.
	cause := Where(st.learnAt, Const(g, int32(CauseWarmUp)),
		Where(d.byResidual, Const(g, int32(CauseResidual)),
			Where(d.byLoss, Const(g, int32(CauseLoss)),
				Where(d.byCurvature, Const(g, int32(CauseCurvature)),
					Where(byRank, Const(g, int32(CauseRank)), Const(g, int32(CauseNone)))))))
	st.bump("refreshes", d.refresh)
	st.bump("refreshes_residual", d.byResidual)
	st.bump("refreshes_loss", d.byLoss)
	if checks && pol.CurvatureFactor > 0 {
		st.bump("refreshes_curvature", d.byCurvature)
	}
	st.bump("svds", learnNow)
	checkCount := st.bump("checks", st.isCheck)
	lastStep := st.counter("last_svd_step", dtypes.Int64)
	lastStep.SetNodeValue(Where(learnNow, st.t, lastStep.NodeValue(g)))
	lastCause := st.counter("last_svd_cause", dtypes.Int32)
	lastCause.SetNodeValue(Where(learnNow, cause, lastCause.NodeValue(g)))
	lastResid := st.scalarState("last_check_residual", ldt)
	lastResid.SetNodeValue(Where(st.isCheck, maxResid, lastResid.NodeValue(g)))

	st.learnNow = learnNow
	st.fullTurn = make(map[handler]*Node, len(hs))
	anyTurn := Const(g, false)
	st.learnAll(hs, learnNow, st.trackingRate(learnNow))
	for i, h := range hs {
		if !checks {
			continue
		}
		turn := Const(g, false) // the matrix subspace takes no full update: its basis tracks
		if st.o.cfg.mode == Temporal {
			turn = LogicalAnd(pol.fullUpdateTurn(st.isCheck, checkCount, i, len(hs)), st.ok)
		}
		st.fullTurn[h] = turn
		anyTurn = LogicalOr(anyTurn, turn)
		if adaptive {
			v := h.variable()
			highVar := st.varState(v, "high_checks", shapes.Make(counterDType))
			lowVar := st.varState(v, "low_checks", shapes.Make(counterDType))
			high, low := pol.rankStreaks(LogicalAnd(st.isCheck, st.ok), h.residual(), highVar.NodeValue(g), lowVar.NodeValue(g))
			// Streaks restart after a basis is learned: the new basis is judged on its own.
			highVar.SetNodeValue(Where(learnNow, ZerosLike(high), high))
			lowVar.SetNodeValue(Where(learnNow, ZerosLike(low), low))
		}
	}
	if checks && pol.FullUpdateEvery > 0 && st.o.cfg.mode == Temporal {
		st.bump("full_updates", anyTurn)
	}
	if adaptive {
		st.counter("rank_changes", dtypes.Int64) // kept by the host's rank rule (AdaptRanks)
	}
}

// trackingRate is the rate at which matrix bases move this step: Policy.FastTrackingRate for
// WarmUp steps from the start of training and from each refresh (learnNow), TrackingRate
// otherwise. A refresh is a burst of fast tracking, not a branch: every step runs the same graph.
func (st *stepState) trackingRate(learnNow *Node) *Node {
	g := st.g
	pol := &st.o.cfg.policy
	fastUntil := st.counter("fast_tracking_until", dtypes.Int64)
	last := AddScalar(st.t, int64(st.o.cfg.warmUp-1)) // a burst lasts WarmUp steps at most
	until := Where(learnNow, last, Min(fastUntil.NodeValue(g), last))
	fastUntil.SetNodeValue(until)
	fast := LessOrEqual(st.t, until)
	return Where(fast, Scalar(g, dtypes.Float32, pol.FastTrackingRate), Scalar(g, dtypes.Float32, pol.TrackingRate))
}

// bump increments the named int64 counter where cond holds and returns its new value.
func (st *stepState) bump(name string, cond *Node) *Node {
	c := st.counter(name, dtypes.Int64)
	old := c.NodeValue(st.g)
	c.SetNodeValue(Where(cond, AddScalar(old, 1), old))
	return c.NodeValue(st.g)
}

// repairStatistics replaces a non-finite value of any float scalar of the state scope (smoothed
// loss, residuals, curvature statistics) by zero, its initial value, as it is stored. Such a
// value comes only from a damaged checkpoint; most of these statistics are EMAs, which would
// carry it for good and switch their rule off silently.
func (st *stepState) repairStatistics() {
	prefix := st.root.Scope() + "/"
	for v := range st.scope.Store().IterVariables() {
		if !strings.HasPrefix(v.Path(), prefix) || !v.DType().IsFloat() || v.Shape().Size() != 1 || !v.InUseByGraph(st.g) {
			continue
		}
		x := v.NodeValue(st.g)
		v.SetNodeValue(Where(IsFinite(x), x, ZerosLike(x)))
	}
}

// scalarState returns a zero-initialised float scalar of the state scope.
func (st *stepState) scalarState(name string, dtype dtypes.DType) *model.Variable {
	return st.root.WithInitializer(initializer.Zero).VariableWithShape(name, shapes.Make(dtype)).SetTrainable(false)
}

// curvature measures κ = ⟨c_t − c_{t−1}, s_{t−1}⟩ / ‖s_{t−1}‖² over every projected variable's
// coefficients (c the coefficient gradient, s the coefficient step): as the bases are
// orthonormal it is the curvature of the loss along the previous weight step. It is measured
// only when both steps used the same bases; its smoothed magnitude and the largest jump since
// the last check (|κ| over that magnitude, after CurvatureWarmUp measurements) are state.
func (st *stepState) curvature(hs []handler, steps map[handler]*Node) {
	g := st.g
	ldt := st.loss.DType()
	num, den := ScalarZero(g, ldt), ScalarZero(g, ldt)
	projecting := Const(g, true)
	for _, h := range hs {
		v := h.variable()
		coef, grad := h.coefficients()
		prevGrad := st.varState(v, "coefficients_prev_grad", coef.Shape())
		prevStep := st.varState(v, "coefficients_prev_step", coef.Shape())
		num = Add(num, ConvertDType(ReduceAllSum(Mul(Sub(grad, prevGrad.NodeValue(g)), prevStep.NodeValue(g))), ldt))
		den = Add(den, ConvertDType(ReduceAllSum(Square(prevStep.NodeValue(g))), ldt))
		prevGrad.SetNodeValue(grad)
		prevStep.SetNodeValue(steps[h])
		projecting = LogicalAnd(projecting, h.useProjection())
	}
	comparableVar := st.counter("curvature_comparable", dtypes.Int32)
	comparable := GreaterThan(comparableVar.NodeValue(g), Const(g, int32(0)))
	measured := LogicalAnd(LogicalAnd(comparable, LogicalNot(st.learnNow)), GreaterThan(den, ZerosLike(den)))
	measured = LogicalAnd(measured, projecting)
	// The next step is comparable with this one if this one projected and kept its bases.
	comparableVar.SetNodeValue(ConvertDType(LogicalAnd(projecting, LogicalNot(st.learnNow)), dtypes.Int32))

	kappa := Where(measured, Div(num, Where(measured, den, OnesLike(den))), ZerosLike(den))
	kappaVar := st.scalarState("curvature", ldt)
	kappaVar.SetNodeValue(Where(measured, kappa, kappaVar.NodeValue(g)))
	emaVar := st.scalarState("curvature_ema", ldt)
	countVar := st.counter("curvature_measurements", dtypes.Int64)
	peakVar := st.scalarState("curvature_peak", ldt)
	ema, count := emaVar.NodeValue(g), countVar.NodeValue(g)
	mag := Abs(kappa)
	seeded := GreaterOrEqual(count, Const(g, int64(CurvatureWarmUp)))
	positive := GreaterThan(ema, ZerosLike(ema))
	ratio := Where(LogicalAnd(seeded, positive), Div(mag, Where(positive, ema, OnesLike(ema))), ZerosLike(ema))
	peakVar.SetNodeValue(Where(measured, Max(peakVar.NodeValue(g), ratio), peakVar.NodeValue(g)))
	newEMA := Where(Equal(count, Const(g, int64(0))), mag, Add(MulScalar(ema, CurvatureEMADecay), MulScalar(mag, 1-CurvatureEMADecay)))
	emaVar.SetNodeValue(Where(measured, newEMA, ema))
	countVar.SetNodeValue(Where(measured, AddScalar(count, 1), count))
}

// applyBase runs the base optimizer once over every trainable variable, with the projected
// variables represented by their coefficient variables, then lifts the coefficient steps back.
//
// The base optimizer pairs gradients with the trainable variables it finds in the scope, so for
// the duration of the call the coefficient variables are marked trainable (and are zero, so the
// step the optimizer applies to them is the coefficient step itself), and matrix-projected
// variables are marked non-trainable (so no full-size state is ever created for them).
func (st *stepState) applyBase(trainables []*model.Variable, grads []*Node, hs []handler, guard *stepGuard) {
	g := st.g
	byVar := make(map[*model.Variable]handler, len(hs))
	byCoef := make(map[*model.Variable]handler, len(hs))
	zero := make(map[handler]*Node, len(hs))
	for _, h := range hs {
		v := h.variable()
		byVar[v] = h
		coef, _ := h.coefficients()
		byCoef[coef] = h
		zero[h] = ZerosLike(coef.NodeValue(g))
		coef.SetNodeValue(zero[h])
		coef.SetTrainable(true)
		if !h.fullUpdateInBase() {
			v.SetTrainable(false)
		}
	}
	defer func() {
		for _, h := range hs {
			coef, _ := h.coefficients()
			coef.SetTrainable(false)
			h.variable().SetTrainable(true)
		}
	}()
	gradOf := make(map[*model.Variable]*Node, len(trainables))
	for i, v := range trainables {
		gradOf[v] = grads[i]
	}

	var baseGrads []*Node
	for v := range st.scope.IterVariables() {
		if !v.Trainable || !v.InUseByGraph(g) {
			continue
		}
		if h, ok := byCoef[v]; ok {
			_, coefGrad := h.coefficients()
			if h.fullUpdateInBase() { // temporal: no coefficient step until it projects
				coefGrad = Where(h.useProjection(), coefGrad, ZerosLike(coefGrad))
			}
			baseGrads = append(baseGrads, coefGrad)
			continue
		}
		grad, ok := gradOf[v]
		if !ok {
			exceptions.Panicf("hooks.Subspace: trainable variable %s appeared while building the step (it has no gradient); create variables in the model function only", v.Path())
		}
		if h, ok := byVar[v]; ok { // temporal warm-up: full gradient, masked once projecting
			grad = Where(h.useProjection(), ZerosLike(grad), grad)
		}
		baseGrads = append(baseGrads, grad)
	}
	st.o.cfg.base.(gradientOptimizer).UpdateGraphWithGradients(st.scope, baseGrads, st.loss.DType())

	lr := st.learningRate()
	steps := make(map[handler]*Node, len(hs))
	stepOK := make(map[handler]*Node, len(hs)) // the coefficient step is finite
	for _, h := range hs {
		v := h.variable()
		coef, _ := h.coefficients()
		step := Sub(coef.NodeValue(g), zero[h])
		// The update itself is checked: a poisoned optimizer state (a damaged checkpoint, an
		// overflowed moment) can make a non-finite step from finite gradients. Such a step is
		// not applied, and the coefficient state restarts (rotateStates).
		stepOK[h] = allFinite(step)
		step = Where(stepOK[h], step, ZerosLike(step))
		steps[h] = step
		before := guard.before[v] // the weights are untouched until the base optimizer runs
		var turn *Node
		if pol := st.o.cfg.policy; pol.FullUpdateEvery > 0 && pol.CheckEvery > 0 {
			turn = st.fullTurn[h]
		}
		if h.fullUpdateInBase() {
			projected := Add(before, h.lift(step, turn))
			if wd := st.o.cfg.weightDecay; wd > 0 && lr != nil {
				projected = Sub(projected, Mul(ConvertDType(lr, v.DType()), MulScalar(before, wd)))
			}
			v.SetNodeValue(Where(h.useProjection(), st.clipStep(before, projected), v.NodeValue(g)))
		} else {
			// The weight takes W·(1 − lr·wd) + lift(step), with the step guard folded into the
			// small coefficient step and the decay scalar: a bad step leaves W as it was without
			// a full-size select (each full-size op is a pass over the weight).
			lifted := h.lift(Where(st.ok, step, ZerosLike(step)), turn)
			projected := Add(before, lifted)
			if wd := st.o.cfg.weightDecay; wd > 0 && lr != nil {
				decay := OneMinus(MulScalar(ConvertDType(lr, v.DType()), wd))
				projected = Add(Mul(before, Where(st.ok, decay, OnesLike(decay))), lifted)
			}
			v.SetNodeValue(st.clipStep(before, projected))
			guard.guarded[v] = true
		}
		coef.SetNodeValue(zero[h])
	}
	if pol := st.o.cfg.policy; pol.CheckEvery > 0 && pol.CurvatureFactor > 0 {
		st.curvature(hs, steps) // only its rule reads it
	}
	st.rotateStates(hs, stepOK)
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

// rotateStates carries every tracker's coefficient-shaped state into its next basis: the
// variables named after its coefficients ("…_coefficients_1st_moment" of the base optimizer,
// "…_coefficients_prev_grad" of the curvature signal), under any scope ending in the
// coefficients' scope, with their shape. Others' (temporal) coefficient state restarts from zero
// after a non-finite step, as trackers' does.
func (st *stepState) rotateStates(hs []handler, stepOK map[handler]*Node) {
	for _, h := range hs {
		coef, _ := h.coefficients()
		var state []*model.Variable
		for sv := range st.scope.Store().IterVariables() {
			if sv != coef && sv.InUseByGraph(st.g) && strings.HasPrefix(sv.Name(), coef.Name()+"_") &&
				strings.HasSuffix(sv.Scope(), coef.Scope()) && sv.Shape().Equal(coef.Shape()) {
				state = append(state, sv)
			}
		}
		if tr, ok := h.(tracker); ok {
			tr.rotateState(state, stepOK[h])
			continue
		}
		for _, sv := range state {
			value := sv.NodeValue(st.g)
			sv.SetNodeValue(Where(LogicalAnd(stepOK[h], IsFinite(ReduceAllSum(value))), value, ZerosLike(value)))
		}
	}
}

// checkStep decides whether this step's update is applied: not if the loss or any gradient is
// non-finite, nor if, after warm-up, the loss exploded (above Policy.ExplodeFactor times its smoothed
// value). A skipped step leaves weights, optimizer state and bases as they were; it is counted
// in "skipped_steps" and reported.
func (st *stepState) checkStep(grads []*Node, hs []handler) {
	g := st.g
	ok := IsFinite(st.loss)
	for _, grad := range grads {
		ok = LogicalAnd(ok, allFinite(grad))
	}
	// On the direct path the gradient reaching the optimizer is (x·Q)ᵀ·∂y, checked instead of ∂y
	// (a pass over a full activation gradient, some 3% of a transformer step): a NaN or Inf in
	// ∂y reaches it (NaN·0 is NaN), a huge value overflows its sum of squares, and a non-finite
	// input can leave ∂y finite (a saturating activation) and still poison it.
	for _, h := range hs {
		if c := h.stepCoefficients(); c != nil {
			ok = LogicalAnd(ok, allFinite(c))
		}
	}
	ema := st.scalarState("loss_ema", st.loss.DType()).NodeValue(g)
	exploded := Const(g, false)
	if factor := st.o.cfg.policy.ExplodeFactor; factor > 0 {
		exploded = LogicalAnd(LogicalAnd(LogicalNot(st.warm), GreaterThan(ema, ZerosLike(ema))),
			GreaterThan(st.loss, MulScalar(ema, factor)))
	}
	// A loss that stays high is a new level, not a spike: after ExplodePatience skipped steps in
	// a row the next one is taken and the smoothed loss restarts from it, so the guard cannot
	// lock training for good (a task or data shift).
	streakVar := st.counter("explode_streak", dtypes.Int32)
	streak := Max(streakVar.NodeValue(g), Const(g, int32(0))) // negative: a damaged checkpoint
	st.reseed = LogicalAnd(LogicalAnd(ok, exploded), GreaterOrEqual(streak, Const(g, int32(ExplodePatience))))
	exploded = LogicalAnd(exploded, LogicalNot(st.reseed))
	streakVar.SetNodeValue(Where(LogicalAnd(ok, exploded), AddScalar(streak, 1), ZerosLike(streak)))
	st.ok = LogicalAnd(ok, LogicalNot(exploded))
	skipped := st.counter("skipped_steps", dtypes.Int64)
	old := skipped.NodeValue(g)
	skipped.SetNodeValue(Where(st.ok, old, AddScalar(old, 1)))
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

// learningRate returns the base optimizer's learning-rate node, if it keeps one in the usual place.
func (st *stepState) learningRate() *Node {
	v := st.scope.At(optimizer.Scope).GetVariable(optimizer.ParamLearningRate)
	if v == nil {
		return nil
	}
	return v.NodeValue(st.g)
}

// Path is how a variable's gradient reaches the base optimizer.
type Path string

const (
	PathTemporal Path = "temporal" // flattened gradient projected on a learned temporal basis
	PathDirect   Path = "direct"   // matrix subspace, projected gradient computed from ∂y; no ∂W
	PathPostHoc  Path = "post-hoc" // matrix subspace, full gradient computed then projected
	PathFull     Path = "full"     // not projected
)

// PlanEntry is the projector's decision for one trainable variable.
type PlanEntry struct {
	Variable string
	Shape    shapes.Shape
	Path     Path
	Side     projector.Side // matrix subspace: the side of the basis (Full variables: unused)
	Rank     int
	Why      string

	rows, cols int         // the variable as a matrix (matrix subspace)
	view       *matrixView // post-hoc path: how its gradient is seen as that matrix
}

// Plan returns the per-variable decisions of the last step graph built.
func (o *Optimizer) Plan() []PlanEntry {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]PlanEntry(nil), o.plan...)
}

// PlanString formats the plan for people: one line per trainable variable.
func (o *Optimizer) PlanString() string {
	var b strings.Builder
	fmt.Fprintf(&b, "subspace (%s mode, rank %d):\n", o.cfg.mode, o.cfg.rank)
	plan := o.Plan()
	rows := make([][3]string, len(plan))
	widths := [3]int{}
	for i, e := range plan {
		detail := string(e.Path)
		if e.Path == PathDirect || e.Path == PathPostHoc {
			detail += fmt.Sprintf(", %s side", e.Side)
		}
		if e.Path != PathFull {
			detail += fmt.Sprintf(", rank %d", e.Rank)
		}
		rows[i] = [3]string{e.Variable, fmt.Sprint(e.Shape.Dimensions), detail}
		for c, cell := range rows[i] { // columns as wide as their longest cell
			widths[c] = max(widths[c], utf8.RuneCountInString(cell))
		}
	}
	for i, e := range plan {
		fmt.Fprintf(&b, "  %-*s  %-*s  %-*s  %s\n", widths[0], rows[i][0], widths[1], rows[i][1], widths[2], rows[i][2], e.Why)
	}
	return b.String()
}
