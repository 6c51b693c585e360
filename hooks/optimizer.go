package hooks

import (
	"fmt"
	"path"
	"strings"
	"sync"

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

// Refresh causes, as stored in the "last_refresh_cause" state variable.
const (
	CauseNone     = 0
	CauseWarmUp   = 1 // the first SVD, at the end of warm-up
	CauseResidual = 2 // a drift check found the residual above the threshold
	CauseLoss     = 3 // the smoothed loss stopped falling for LossPatience checks
)

// CauseName returns a readable name of a refresh cause.
func CauseName(cause int) string {
	switch cause {
	case CauseWarmUp:
		return "end of warm-up"
	case CauseResidual:
		return "residual above threshold"
	case CauseLoss:
		return "smoothed loss stopped falling"
	}
	return "none"
}

// Optimizer is the gradient-subspace optimizer; it implements optimizer.Interface (and
// train.OptimizeWithGradients' sibling UpdateGraph only: accumulation is not supported).
type Optimizer struct {
	cfg       Config
	configErr error

	mu        sync.Mutex
	projected []ProjectedVariable // as of the last graph built
	stateRoot string              // absolute scope of the state variables
	lastGraph *Graph
	marks     GraphMarks
	builds    int
}

// ProjectedVariable describes one variable the optimizer projects.
type ProjectedVariable struct {
	Path  string
	Shape shapes.Shape
	Size  int // P, the number of elements
	Rank  int // k, columns of the basis
}

// GraphMarks are node-count boundaries in the last step graph built: nodes before Forward were
// built by the model and loss; up to Gradient by back-propagation; up to Projector by the
// projector and base optimizer. FLOP accounting uses them to split a step's products.
type GraphMarks struct {
	Forward, Gradient, Projector int
}

var _ optimizer.Interface = (*Optimizer)(nil)

// Projected returns the variables projected in the last step graph built.
func (o *Optimizer) Projected() []ProjectedVariable {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]ProjectedVariable(nil), o.projected...)
}

// StepGraph returns the last step graph built and the marks splitting it (see GraphMarks), for
// FLOP accounting; nil before the first step.
func (o *Optimizer) StepGraph() (*Graph, GraphMarks) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.lastGraph, o.marks
}

// Builds returns how many step graphs the optimizer has built: one per compilation of the
// trainer's step (per input shape). Phase switches and refreshes add none.
func (o *Optimizer) Builds() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.builds
}

// Config returns a copy of the optimizer's configuration.
func (o *Optimizer) Config() Config { return o.cfg }

// Clear deletes the projector's state and the base optimizer's.
func (o *Optimizer) Clear(scope *model.Scope) error {
	if err := o.cfg.base.Clear(scope); err != nil {
		return err
	}
	return scope.At(StateScope).DeleteVariablesInScope()
}

// UpdateGraph implements optimizer.Interface: it builds the gradient, projection, drift check and
// update of one training step.
func (o *Optimizer) UpdateGraph(scope *model.Scope, g *Graph, loss *Node) {
	if o.configErr != nil {
		exceptions.Panicf("%v", o.configErr)
	}
	if !o.cfg.enabled {
		forwardMark := len(g.Nodes())
		o.cfg.base.UpdateGraph(scope, g, loss)
		end := len(g.Nodes())
		o.mu.Lock()
		o.lastGraph, o.builds = g, o.builds+1
		o.marks = GraphMarks{Forward: forwardMark, Gradient: end, Projector: end}
		o.mu.Unlock()
		return
	}
	if !loss.IsScalar() {
		exceptions.Panicf("hooks.Subspace: the loss must be a scalar, got shape %s", loss.Shape())
	}
	forwardMark := len(g.Nodes())

	// Gradients of every trainable variable in use, in the store's order (the order the base
	// optimizer pairs gradients with variables).
	var trainables []*model.Variable
	var values []*Node
	for v := range scope.IterVariables() {
		if v.Trainable && v.InUseByGraph(g) {
			trainables = append(trainables, v)
			values = append(values, v.NodeValue(g))
		}
	}
	if len(trainables) == 0 {
		exceptions.Panicf("hooks.Subspace: no trainable variable is used by the model: nothing to optimize")
	}
	grads := Gradient(loss, values...)
	gradientMark := len(g.Nodes())

	st := o.newStepState(scope, g, loss)
	var projected []*projectedVar
	var infos []ProjectedVariable
	for i, v := range trainables {
		if !o.cfg.selectFn(v) {
			continue
		}
		if err := o.checkProjectable(v); err != nil {
			exceptions.Panicf("%v", err)
		}
		pv := st.newProjectedVar(v, values[i], grads[i])
		projected = append(projected, pv)
		infos = append(infos, ProjectedVariable{Path: v.Path(), Shape: v.Shape(), Size: v.Shape().Size(), Rank: o.cfg.rank})
	}
	if len(projected) == 0 {
		var paths []string
		for _, v := range trainables {
			paths = append(paths, fmt.Sprintf("%s %s", v.Path(), v.Shape()))
		}
		exceptions.Panicf("hooks.Subspace: the selection (%s) matches none of the %d trainable variables [%s]; "+
			"choose some with Variables(paths...), Matching(regexp) or Select(fn), or use Enabled(false) to train without projection",
			o.cfg.selectDesc, len(trainables), strings.Join(paths, ", "))
	}

	st.driftAndRefresh(projected)
	st.applyBase(trainables, grads, projected)

	o.mu.Lock()
	o.projected = infos
	o.stateRoot = st.root.Scope()
	o.lastGraph = g
	o.builds++
	o.marks = GraphMarks{Forward: forwardMark, Gradient: gradientMark, Projector: len(g.Nodes())}
	o.mu.Unlock()
}

// checkProjectable explains why a selected variable cannot be projected, if it cannot.
func (o *Optimizer) checkProjectable(v *model.Variable) error {
	shape := v.Shape()
	switch {
	case !v.DType().IsFloat():
		return fmt.Errorf("hooks.Subspace: variable %s has dtype %s: only float variables can be projected (leave it out of the selection)", v.Path(), v.DType())
	case shape.Size() < o.cfg.rank:
		return fmt.Errorf("hooks.Subspace: variable %s %s has %d elements, fewer than Rank(%d): lower the rank or leave it out of the selection", v.Path(), shape, shape.Size(), o.cfg.rank)
	}
	return nil
}

// stepState holds what one step graph shares across the projected variables.
type stepState struct {
	o     *Optimizer
	scope *model.Scope
	root  *model.Scope // the state scope
	g     *Graph
	loss  *Node

	t          *Node // this step's number, 1-based (int64)
	warm       *Node // t ≤ WarmUp
	firstLearn *Node // t == WarmUp
	isCheck    *Node // a drift check runs this step
}

func (o *Optimizer) newStepState(scope *model.Scope, g *Graph, loss *Node) *stepState {
	root := scope.At(StateScope)
	st := &stepState{o: o, scope: scope, root: root, g: g, loss: loss}
	stepVar := st.counter("step", dtypes.Int64)
	st.t = AddScalar(stepVar.NodeValue(g), 1)
	stepVar.SetNodeValue(st.t)
	n0 := int64(o.cfg.warmUp)
	st.warm = LessOrEqual(st.t, Const(g, n0))
	st.firstLearn = Equal(st.t, Const(g, n0))
	if k := int64(o.cfg.checkEvery); k > 0 {
		sinceWarm := Sub(st.t, Const(g, n0))
		st.isCheck = LogicalAnd(GreaterThan(sinceWarm, Const(g, int64(0))),
			Equal(ModScalar(sinceWarm, k), Const(g, int64(0))))
	} else {
		st.isCheck = Const(g, false)
	}
	return st
}

// counter returns a scalar non-trainable state variable (zero-initialised) in the state scope.
func (st *stepState) counter(name string, dtype dtypes.DType) *model.Variable {
	return st.root.WithInitializer(initializer.Zero).VariableWithShape(name, shapes.Make(dtype)).SetTrainable(false)
}

// projectedVar is the per-variable state and graph nodes of one projected variable.
type projectedVar struct {
	v            *model.Variable
	value        *Node // value before the update
	grad         *Node // full gradient, variable's shape
	flat         *Node // full gradient flattened [P]
	snapshots    *model.Variable
	basis        *model.Variable
	coefficients *model.Variable
	explained    *model.Variable
	rank         *model.Variable
	valid        *model.Variable
	residual     *model.Variable

	recorded *Node // the snapshot stack including this step's gradient
	resid    *Node // relative residual of this step's gradient against the current basis
}

func (st *stepState) newProjectedVar(v *model.Variable, value, grad *Node) *projectedVar {
	cfg := &st.o.cfg
	p := v.Shape().Size()
	dtype := v.DType()
	vs := st.o.varScope(st.scope, v)
	state := func(name string, shape shapes.Shape) *model.Variable {
		return vs.WithInitializer(initializer.Zero).VariableWithShape(v.Name()+"_"+name, shape).SetTrainable(false)
	}
	pv := &projectedVar{
		v: v, value: value, grad: grad,
		flat:         Reshape(grad, p),
		snapshots:    state("snapshots", shapes.Make(dtype, cfg.warmUp, p)),
		basis:        state("basis", shapes.Make(dtype, p, cfg.rank)),
		coefficients: state("coefficients", shapes.Make(dtype, cfg.rank)),
		explained:    state("explained", shapes.Make(dtype)),
		rank:         state("rank", shapes.Make(dtypes.Int32)),
		valid:        state("valid", shapes.Make(dtypes.Int32)),
		residual:     state("residual", shapes.Make(dtype)),
	}
	g := st.g
	// Record this step's gradient in the ring buffer (row (t−1) mod N0). A non-finite gradient is
	// recorded as zeros: it must not reach the SVD.
	row := ConvertDType(ModScalar(Sub(st.t, Const(g, int64(1))), int64(cfg.warmUp)), dtypes.Int32)
	finite := LogicalAll(IsFinite(pv.flat))
	rowValue := Where(finite, pv.flat, ZerosLike(pv.flat))
	pv.recorded = DynamicUpdateSlice(pv.snapshots.NodeValue(g), InsertAxes(rowValue, 0),
		[]*Node{row, Const(g, int32(0))})
	pv.snapshots.SetNodeValue(pv.recorded)
	pv.resid = projector.RelativeResidual(pv.basis.NodeValue(g), rowValue)
	return pv
}

// varScope is the state scope of one projected variable: the variable's own scope under the
// projector's state scope, so paths read like "/subspace/dense_0/weights_basis".
func (o *Optimizer) varScope(scope *model.Scope, v *model.Variable) *model.Scope {
	return scope.Store().Scope(path.Join(scope.Scope(), StateScope, v.Scope()))
}

// driftAndRefresh runs the drift check (on check steps) and learns the bases where due: at the
// end of warm-up, or when a check's residual or the smoothed loss calls for a refresh.
func (st *stepState) driftAndRefresh(vars []*projectedVar) {
	cfg := &st.o.cfg
	g := st.g
	ldt := st.loss.DType()

	// Smoothed loss: an EMA, seeded with the first loss; a non-finite loss is ignored.
	emaVar := st.root.WithInitializer(initializer.Zero).VariableWithShape("loss_ema", shapes.Make(ldt)).SetTrainable(false)
	bestVar := st.root.WithInitializer(initializer.Zero).VariableWithShape("best_loss_ema", shapes.Make(ldt)).SetTrainable(false)
	plateauVar := st.counter("plateau_checks", dtypes.Int32)
	ema := emaVar.NodeValue(g)
	isFirst := Equal(st.t, Const(g, int64(1)))
	newEMA := Where(isFirst, st.loss, Add(MulScalar(ema, LossEMADecay), MulScalar(st.loss, 1-LossEMADecay)))
	newEMA = Where(IsFinite(st.loss), newEMA, ema)
	emaVar.SetNodeValue(newEMA)

	// Loss trigger: at a check, progress means the EMA fell below the best by LossMinImprovement.
	best := bestVar.NodeValue(g)
	firstCheckOrWarm := LessOrEqual(st.t, Const(g, int64(cfg.warmUp))) // best is (re)seeded during warm-up
	improved := LessThan(newEMA, MulScalar(best, 1-LossMinImprovement))
	plateau := plateauVar.NodeValue(g)
	plateauAfterCheck := Where(improved, ZerosLike(plateau), AddScalar(plateau, 1))
	lossTrigger := Const(g, false)
	if cfg.lossPatience > 0 {
		lossTrigger = LogicalAnd(st.isCheck, GreaterOrEqual(plateauAfterCheck, Const(g, int32(cfg.lossPatience))))
	}

	// Residual trigger: the largest relative residual among the projected variables.
	maxResid := vars[0].resid
	for _, pv := range vars[1:] {
		maxResid = Max(maxResid, ConvertDType(pv.resid, maxResid.DType()))
	}
	residualTrigger := Const(g, false)
	if cfg.residualThreshold < 1 {
		residualTrigger = LogicalAnd(st.isCheck, GreaterThan(maxResid, Scalar(g, maxResid.DType(), cfg.residualThreshold)))
	}
	refresh := LogicalOr(residualTrigger, lossTrigger)
	learnNow := LogicalOr(st.firstLearn, refresh)

	// Loss bookkeeping: seeded during warm-up, updated at checks, reset by a refresh.
	newBest := Where(LogicalOr(firstCheckOrWarm, LogicalOr(refresh, LogicalAnd(st.isCheck, improved))), newEMA, best)
	newPlateau := Where(LogicalAnd(st.isCheck, LogicalNot(refresh)), plateauAfterCheck, Where(refresh, ZerosLike(plateau), plateau))
	bestVar.SetNodeValue(newBest)
	plateauVar.SetNodeValue(newPlateau)

	// Counters and the last event, read by the host-side Monitor.
	cause := Where(st.firstLearn, Const(g, int32(CauseWarmUp)),
		Where(residualTrigger, Const(g, int32(CauseResidual)),
			Where(lossTrigger, Const(g, int32(CauseLoss)), Const(g, int32(CauseNone)))))
	bump := func(name string, cond *Node) {
		c := st.counter(name, dtypes.Int64)
		old := c.NodeValue(g)
		c.SetNodeValue(Where(cond, AddScalar(old, 1), old))
	}
	bump("refreshes", refresh)
	bump("refreshes_residual", residualTrigger)
	bump("refreshes_loss", lossTrigger)
	bump("svds", learnNow)
	bump("checks", st.isCheck)
	lastStep := st.counter("last_svd_step", dtypes.Int64)
	lastStep.SetNodeValue(Where(learnNow, st.t, lastStep.NodeValue(g)))
	lastCause := st.counter("last_svd_cause", dtypes.Int32)
	lastCause.SetNodeValue(Where(learnNow, cause, lastCause.NodeValue(g)))
	lastResid := st.root.WithInitializer(initializer.Zero).VariableWithShape("last_check_residual", maxResid.Shape()).SetTrainable(false)
	lastResid.SetNodeValue(Where(st.isCheck, maxResid, lastResid.NodeValue(g)))

	for _, pv := range vars {
		pv.residual.SetNodeValue(Where(st.isCheck, pv.resid, pv.residual.NodeValue(g)))
		st.learn(pv, learnNow)
	}
}

// learn re-learns pv's basis from its snapshots when learnNow is true. The SVD is gated (see
// projector.LearnTemporalWhen), so ordinary steps don't pay for it; an invalid result (zero or
// non-finite stack) keeps the previous basis.
func (st *stepState) learn(pv *projectedVar, learnNow *Node) {
	cfg := &st.o.cfg
	g := st.g
	previous := projector.Temporal{
		Basis:             pv.basis.NodeValue(g),
		SingularValues:    ZerosLike(pv.coefficients.NodeValue(g)),
		ExplainedVariance: pv.explained.NodeValue(g),
		Rank:              pv.rank.NodeValue(g),
	}
	t := projector.LearnTemporalWhen(learnNow, pv.recorded,
		projector.TemporalOptions{Rank: cfg.rank, VarianceThreshold: cfg.varianceThreshold}, previous)
	pv.basis.SetNodeValue(t.Basis)
	pv.explained.SetNodeValue(t.ExplainedVariance)
	pv.rank.SetNodeValue(t.Rank)
	oldValid := pv.valid.NodeValue(g)
	pv.valid.SetNodeValue(Where(t.Valid, OnesLike(oldValid), oldValid))
}

// applyBase runs the base optimizer once over every trainable variable, with the projected
// variables represented by their coefficient variables, then lifts the coefficient steps back.
//
// The base optimizer pairs gradients with the trainable variables it finds in the scope, so for
// the duration of the call the coefficient variables are marked trainable (and are zero, so the
// step the optimizer applies to them is the coefficient step itself). During warm-up the
// projected variables take the base optimizer's full update instead; both paths live in the same
// graph and a Where picks one, so the switch costs no recompilation.
func (st *stepState) applyBase(trainables []*model.Variable, grads []*Node, vars []*projectedVar) {
	g := st.g
	byPath := make(map[string]*projectedVar, len(vars))
	byCoefPath := make(map[string]*projectedVar, len(vars))
	for _, pv := range vars {
		byPath[pv.v.Path()] = pv
		byCoefPath[pv.coefficients.Path()] = pv
	}
	gradOf := make(map[string]*Node, len(trainables))
	for i, v := range trainables {
		gradOf[v.Path()] = grads[i]
	}

	useProj := make(map[*projectedVar]*Node, len(vars))
	zeroCoef := make(map[*projectedVar]*Node, len(vars))
	for _, pv := range vars {
		useProj[pv] = LogicalAnd(LogicalNot(st.warm), GreaterThan(pv.valid.NodeValue(g), Const(g, int32(0))))
		zero := ZerosLike(pv.coefficients.NodeValue(g))
		zeroCoef[pv] = zero
		pv.coefficients.SetNodeValue(zero)
		pv.coefficients.SetTrainable(true)
	}
	defer func() {
		for _, pv := range vars {
			pv.coefficients.SetTrainable(false)
		}
	}()

	var baseGrads []*Node
	for v := range st.scope.IterVariables() {
		if !v.Trainable || !v.InUseByGraph(g) {
			continue
		}
		if pv, ok := byCoefPath[v.Path()]; ok {
			coef := projector.Coefficients(pv.basis.NodeValue(g), pv.flat)
			baseGrads = append(baseGrads, Where(useProj[pv], coef, ZerosLike(coef)))
			continue
		}
		grad, ok := gradOf[v.Path()]
		if !ok {
			exceptions.Panicf("hooks.Subspace: trainable variable %s appeared while building the step (it has no gradient); create variables in the model function only", v.Path())
		}
		if pv, ok := byPath[v.Path()]; ok {
			grad = Where(useProj[pv], ZerosLike(grad), grad)
		}
		baseGrads = append(baseGrads, grad)
	}
	st.o.cfg.base.(gradientOptimizer).UpdateGraphWithGradients(st.scope, baseGrads, st.loss.DType())

	lr := st.learningRate()
	for _, pv := range vars {
		step := Sub(pv.coefficients.NodeValue(g), zeroCoef[pv])
		lifted := Reshape(projector.Lift(pv.basis.NodeValue(g), step), pv.v.Shape().Dimensions...)
		projectedValue := Add(pv.value, lifted)
		if wd := st.o.cfg.weightDecay; wd > 0 && lr != nil {
			projectedValue = Sub(projectedValue, Mul(ConvertDType(lr, pv.value.DType()), MulScalar(pv.value, wd)))
		}
		baseValue := pv.v.NodeValue(g) // the base optimizer's full update, used during warm-up
		pv.v.SetNodeValue(Where(useProj[pv], projectedValue, baseValue))
		pv.coefficients.SetNodeValue(zeroCoef[pv])
	}
}

// learningRate returns the base optimizer's learning-rate node, if it keeps one in the usual place.
func (st *stepState) learningRate() *Node {
	v := st.scope.At(optimizer.Scope).GetVariable(optimizer.ParamLearningRate)
	if v == nil {
		return nil
	}
	return v.NodeValue(st.g)
}
