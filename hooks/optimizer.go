package hooks

import (
	"sync"

	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/train"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gomlx/gomlx/support/exceptions"
	"github.com/gradsub/gradsub/hooks/internal/step"
)

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
		step.UnpackAll(scope.Store(), scope.At(StateScope).Scope()) // stock finds its state per variable
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
		step.UnpackAll(scope.Store(), scope.At(StateScope).Scope())
		o.cfg.base.(train.OptimizeWithGradients).UpdateGraphWithGradients(scope, grads, lossDType)
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
