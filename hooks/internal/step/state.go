package step

import (
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/model/initializer"
	"github.com/gomlx/gomlx/support/exceptions"
	"github.com/gradsub/gradsub/hooks/internal/rules"
	"github.com/gradsub/gradsub/internal/upstream"
)

// Schema lists every entry of the projector's state, scalars first (TestStateSchemaCoversTheStore checks the store
// against it).
var Schema = []rules.StateVar{
	SvStep, SvSkippedSteps, SvExplodeStreak, SvLossRestarts, SvDivergenceHold, SvGuardBuild, SvLossEMA, SvBestLossEMA, SvPlateauChecks, SvFreshPending,
	SvCurvature, SvCurvatureEMA, SvCurvatureCount, SvComparable, SvCurvaturePeak, SvLastCheckPeak,
	SvLearnNext, SvRankChanges, SvFastUntil, SvRefreshes, SvByResidual, SvByLoss, SvByCurvature,
	SvChecks, SvFullUpdates, SvLastFullTurn, SvLearnings, SvLastLearnStep, SvLastLearnCause, SvLastResidual, SvBasesKept,
	SvBasis, SvCoefficients, SvValid, SvResidual, SvFreshResidual, SvHighChecks, SvLowChecks,
	SvPrevGrad, SvPrevStep, SvExplained, SvRank, SvSnapshots, SvComplementLen, SvStepLogScale, SvMatrices, SvStackMembers,
	SvPackValues, SvPackMembers,
}

// scalar returns the scalar state variable s of the state scope, as a float of the loss's dtype
// where s has none of its own.
func (st *stepState) scalar(s rules.StateVar) *model.Variable {
	dtype := s.DType
	if dtype == dtypes.InvalidDType {
		dtype = st.loss.DType()
	}
	return st.root.WithInitializer(initializer.Zero).VariableWithShape(s.Name, shapes.Make(dtype)).SetTrainable(false)
}

// perVariable returns the state variable s of the projected variable v, with the given shape
// (its dtype: s's, or the given shape's for float entries). Checkpoints don't keep the
// Trainable flag, so it is set again each time.
func (st *stepState) perVariable(v *model.Variable, s rules.StateVar, shape shapes.Shape) *model.Variable {
	if s.DType != dtypes.InvalidDType {
		shape = shapes.Make(s.DType, shape.Dimensions...)
	}
	full := s.OfVariable(st.root.Scope(), v.Path())
	// A resumed store may hold the state of another configuration: say which options differ
	// instead of GoMLX's shape error. A dtype or a number of axes that no option gives is damage
	// (a checkpoint edited or written by something else), and is said to be.
	if old := st.scope.Store().GetVariable(full); old != nil && !old.Shape().Equal(shape) {
		if old.DType() != shape.DType || old.Shape().Rank() != shape.Rank() {
			exceptions.Panicf("hooks.Subspace: the store's %s is damaged (from a checkpoint): it is %s where the projector keeps %s, "+
				"which no option changes. Delete the projector's state (Optimizer.Clear) to learn new bases, or restore the checkpoint",
				full, old.Shape(), shape)
		}
		exceptions.Panicf("hooks.Subspace: the store holds %s with shape %s (from a checkpoint), but this configuration needs %s: "+
			"%s. Resume with the checkpoint's options, or delete the projector's state (Optimizer.Clear) to learn new bases",
			full, old.Shape(), shape, st.optionThatDiffers(v, s, old.Shape(), shape))
	}
	scopePath, name := model.SplitPath(full)
	vs := st.scope.Store().Scope(scopePath)
	return vs.WithInitializer(initializer.Zero).VariableWithShape(name, shape).SetTrainable(false)
}

// optionThatDiffers names the option a resumed checkpoint was trained with that this
// configuration changes, read from the state's shapes: only temporal mode keeps snapshots; a
// temporal basis is [elements, Rank] and its snapshots [WarmUp, elements]; a matrix basis is
// [the side's length, Rank] (another matrix Rank is caught before, with its own message).
func (st *stepState) optionThatDiffers(v *model.Variable, s rules.StateVar, old, want shapes.Shape) string {
	storedTemporal := st.scope.Store().GetVariable(SvSnapshots.OfVariable(st.root.Scope(), v.Path())) != nil
	temporal := st.cfg.Mode == rules.Temporal
	differs := func(axis int) bool {
		return old.Rank() == want.Rank() && old.Rank() > axis && old.Dim(axis) != want.Dim(axis)
	}
	switch {
	case temporal && !storedTemporal:
		return "its Mode differs (the checkpoint trained this variable in matrix mode, this configuration in Mode(hooks.Temporal))"
	case !temporal && storedTemporal:
		return "its Mode differs (the checkpoint trained this variable in Mode(hooks.Temporal), this configuration in matrix mode)"
	case temporal && s == SvSnapshots && differs(0):
		return fmt.Sprintf("its WarmUp differs (the checkpoint's is %d, this configuration's %d)", old.Dim(0), want.Dim(0))
	case temporal && s == SvBasis && differs(1) && !differs(0):
		return fmt.Sprintf("its temporal Rank differs (the checkpoint's is %d, this configuration's %d)", old.Dim(1), want.Dim(1))
	case !temporal && s == SvBasis && differs(0) && !differs(1):
		return fmt.Sprintf("its Side differs (the checkpoint's basis has %d rows, this configuration's side has %d)", old.Dim(0), want.Dim(0))
	}
	return "its Mode, Rank, Side or WarmUp differ from the checkpoint's"
}

// bump increments the int64 counter s where cond holds and returns its new value.
func (st *stepState) bump(s rules.StateVar, cond *Node) *Node {
	c := st.scalar(s)
	old := c.NodeValue(st.g)
	c.SetNodeValue(Where(cond, AddScalar(old, 1), old))
	return c.NodeValue(st.g)
}

// repairStatistics replaces a non-finite value of any float scalar of the state scope (smoothed
// loss, residuals, curvature statistics), and of matrix mode's per-matrix vectors of them, by
// zero, its initial value, as it is stored. Such a value comes only from a damaged checkpoint;
// most of these statistics are EMAs, which would carry it for good and switch their rule off
// silently.
func (st *stepState) repairStatistics() {
	root := st.root.Scope()
	prefix := root + "/"
	for v := range st.scope.Store().IterVariables() {
		if !strings.HasPrefix(v.Path(), prefix) || !v.DType().IsFloat() || !v.InUseByGraph(st.g) ||
			(v.Shape().Size() != 1 && !isMatrixVector(root, v)) {
			continue
		}
		x := v.NodeValue(st.g)
		v.SetNodeValue(Where(IsFinite(x), x, upstream.ZeroOf(x)))
	}
}

// namedState is every stored variable called name in scope, and the state named after it under
// any scope that ends with scope (the base optimizer keeps its own, GoMLX's naming rule).
func namedState(store *model.Store, scope, name string) []*model.Variable {
	var vars []*model.Variable
	for v := range store.IterVariables() {
		if strings.HasSuffix(v.Scope(), scope) && (v.Name() == name || strings.HasPrefix(v.Name(), name+"_")) {
			vars = append(vars, v)
		}
	}
	return vars
}

// optimizerStateScope says whether sv is state an optimizer keeps for the variable called name
// in scope, of dims (GoMLX's naming rule: "<name>_…", of those dimensions, in scope under the
// optimizer's own, x), and gives x. The projector's own state (under root, or in scope itself)
// is not. Dtypes may differ (an optimizer may keep its state in its own); the Trainable flag is
// not read (a checkpoint does not keep it).
func optimizerStateScope(sv *model.Variable, scope, name string, dims []int, root string) (x string, ok bool) {
	if !strings.HasPrefix(sv.Name(), name+"_") || !slices.Equal(sv.Shape().Dimensions, dims) {
		return "", false
	}
	x, found := strings.CutSuffix(sv.Scope(), strings.TrimSuffix(scope, "/"))
	if !found || x == "" || x == "/" || path.Join(x, scope) != sv.Scope() || strings.HasPrefix(sv.Scope()+"/", root+"/") {
		return "", false
	}
	return x, true
}
