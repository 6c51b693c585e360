package hooks

import (
	"fmt"
	"path"
	"strings"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/model/initializer"
	"github.com/gomlx/gomlx/support/exceptions"
	"github.com/gradsub/gradsub/internal/upstream"
)

// stateVar is one entry of the projector's state schema: a non-trainable, zero-initialised
// variable under the state scope. The step graph creates it and Report, the Monitor and the
// rank rule read it through the same entry, so a rename is one edit (and a typo a compile
// error). Names are stored in checkpoints: changing one loses that value on resume.
type stateVar struct {
	name  string       // scalars: the name in the state scope; per variable: the suffix after "<variable>_"
	dtype dtypes.DType // InvalidDType: a float, of the loss's dtype (scalars) or the variable's state dtype
	rule  string       // the rule or phase that owns it
}

// The state schema. Scalars of the state scope ("/subspace/step"):
var (
	svStep           = stateVar{"step", dtypes.Int64, "schedule: steps taken, skipped ones included"}
	svSkippedSteps   = stateVar{"skipped_steps", dtypes.Int64, "guard: steps not applied"}
	svExplodeStreak  = stateVar{"explode_streak", dtypes.Int32, "guard: consecutive steps skipped for an exploding loss"}
	svLossRestarts   = stateVar{"loss_restarts", dtypes.Int64, "guard: lasting loss shifts taken as a new level (the smoothed loss restarted)"}
	svDivergenceHold = stateVar{"divergence_hold", dtypes.Int32, "guard: a loss that exploded in the first steps is held (1), or on trial (-1)"}
	svGuardBuild     = stateVar{"guard_build", dtypes.Int64, "guard: the step graph that set the hold (a new build lifts it)"}
	svLossEMA        = stateVar{"loss_ema", dtypes.InvalidDType, "loss rule: smoothed loss"}
	svBestLossEMA    = stateVar{"best_loss_ema", dtypes.InvalidDType, "loss rule: best smoothed loss since the last refresh"}
	svPlateauChecks  = stateVar{"plateau_checks", dtypes.Int32, "loss rule: consecutive checks without progress"}
	svFreshPending   = stateVar{"fresh_residual_pending", dtypes.Int32, "residual rule: the next check records the fresh residuals"}
	svCurvature      = stateVar{"curvature", dtypes.InvalidDType, "curvature rule: the last κ measured"}
	svCurvatureEMA   = stateVar{"curvature_ema", dtypes.InvalidDType, "curvature rule: smoothed |κ|"}
	svCurvatureCount = stateVar{"curvature_measurements", dtypes.Int64, "curvature rule: κ measured so far"}
	svComparable     = stateVar{"curvature_comparable", dtypes.Int32, "curvature rule: the next step can measure κ"}
	svCurvaturePeak  = stateVar{"curvature_peak", dtypes.InvalidDType, "curvature rule: the largest jump since the last check"}
	svLastCheckPeak  = stateVar{"last_check_curvature_peak", dtypes.InvalidDType, "curvature rule: the peak at the last check"}
	svLearnNext      = stateVar{"learn_next", dtypes.Int32, "rank rule: learn the bases at their new ranks next step"}
	svRankChanges    = stateVar{"rank_changes", dtypes.Int64, "rank rule: variables whose rank changed (kept on the host)"}
	svFastUntil      = stateVar{"fast_tracking_until", dtypes.Int64, "tracking: the last step of the current burst of fast tracking"}
	svRefreshes      = stateVar{"refreshes", dtypes.Int64, "controller: refreshes, any cause"}
	svByResidual     = stateVar{"refreshes_residual", dtypes.Int64, "controller: refreshes by the residual rule"}
	svByLoss         = stateVar{"refreshes_loss", dtypes.Int64, "controller: refreshes by the loss rule"}
	svByCurvature    = stateVar{"refreshes_curvature", dtypes.Int64, "controller: refreshes by the curvature rule"}
	svChecks         = stateVar{"checks", dtypes.Int64, "controller: drift checks run"}
	svFullUpdates    = stateVar{"full_updates", dtypes.Int64, "controller: checks that gave a variable a full update (temporal)"}
	svLastFullTurn   = stateVar{"last_full_update", dtypes.Int32, "controller: which variable (in path order) took the last full update"}
	// "svds" counts the steps that learned bases (temporal: an SVD; matrix: a start of fast
	// tracking); the stored name is older than matrix mode and kept for checkpoints.
	svLearnings      = stateVar{"svds", dtypes.Int64, "controller: bases learned, warm-up included"}
	svLastLearnStep  = stateVar{"last_svd_step", dtypes.Int64, "controller: the step of the last learning"}
	svLastLearnCause = stateVar{"last_svd_cause", dtypes.Int32, "controller: its Cause"}
	svLastResidual   = stateVar{"last_check_residual", dtypes.InvalidDType, "controller: the largest residual at the last check"}
	svBasesKept      = stateVar{"bases_kept", dtypes.Int64, "temporal learning: attempts that met a zero or non-finite stack"}
)

// Per projected variable, under its own scope in the state scope ("/subspace/dense_0/weights_basis"):
var (
	svBasis         = stateVar{"basis", dtypes.InvalidDType, "basis: the orthonormal basis"}
	svCoefficients  = stateVar{"coefficients", dtypes.InvalidDType, "base step: the variable the base optimizer updates (zero between steps)"}
	svValid         = stateVar{"valid", dtypes.Int32, "basis: a basis was learned"}
	svResidual      = stateVar{"residual", dtypes.InvalidDType, "residual rule: the (matrix: smoothed) relative residual"}
	svFreshResidual = stateVar{"fresh_residual", dtypes.InvalidDType, "residual rule: the residual at the basis's first check"}
	svHighChecks    = stateVar{"high_checks", counterDType, "rank rule: checks in a row above GrowAbove"}
	svLowChecks     = stateVar{"low_checks", counterDType, "rank rule: checks in a row below ShrinkBelow"}
	svPrevGrad      = stateVar{"coefficients_prev_grad", dtypes.InvalidDType, "curvature rule: the last coefficient gradient"}
	svPrevStep      = stateVar{"coefficients_prev_step", dtypes.InvalidDType, "curvature rule: the last coefficient step"}
	svExplained     = stateVar{"explained", dtypes.InvalidDType, "temporal basis: explained variance of its snapshots"}
	svRank          = stateVar{"rank", dtypes.Int32, "temporal basis: its effective rank"}
	svSnapshots     = stateVar{"snapshots", dtypes.InvalidDType, "temporal basis: the ring buffer of recent gradients"}
	svComplementLen = stateVar{"complement_step_length", dtypes.InvalidDType, "complement: the length of the last complement step (its growth limit)"}
)

// stateSchema lists every entry, scalars first (TestStateSchemaCoversTheStore checks the store
// against it).
var stateSchema = []stateVar{
	svStep, svSkippedSteps, svExplodeStreak, svLossRestarts, svDivergenceHold, svGuardBuild, svLossEMA, svBestLossEMA, svPlateauChecks, svFreshPending,
	svCurvature, svCurvatureEMA, svCurvatureCount, svComparable, svCurvaturePeak, svLastCheckPeak,
	svLearnNext, svRankChanges, svFastUntil, svRefreshes, svByResidual, svByLoss, svByCurvature,
	svChecks, svFullUpdates, svLastFullTurn, svLearnings, svLastLearnStep, svLastLearnCause, svLastResidual, svBasesKept,
	svBasis, svCoefficients, svValid, svResidual, svFreshResidual, svHighChecks, svLowChecks,
	svPrevGrad, svPrevStep, svExplained, svRank, svSnapshots, svComplementLen,
}

// of is the path of a scalar entry under the state scope root.
func (s stateVar) of(root string) string { return path.Join(root, s.name) }

// ofVariable is the path of a per-variable entry for the variable at variablePath.
func (s stateVar) ofVariable(root, variablePath string) string {
	scope, name := model.SplitPath(variablePath)
	return path.Join(root, scope, name+"_"+s.name)
}

// scalar returns the scalar state variable s of the state scope, as a float of the loss's dtype
// where s has none of its own.
func (st *stepState) scalar(s stateVar) *model.Variable {
	dtype := s.dtype
	if dtype == dtypes.InvalidDType {
		dtype = st.loss.DType()
	}
	return st.root.WithInitializer(initializer.Zero).VariableWithShape(s.name, shapes.Make(dtype)).SetTrainable(false)
}

// perVariable returns the state variable s of the projected variable v, with the given shape
// (its dtype: s's, or the given shape's for float entries). Checkpoints don't keep the
// Trainable flag, so it is set again each time.
func (st *stepState) perVariable(v *model.Variable, s stateVar, shape shapes.Shape) *model.Variable {
	if s.dtype != dtypes.InvalidDType {
		shape = shapes.Make(s.dtype, shape.Dimensions...)
	}
	full := s.ofVariable(st.root.Scope(), v.Path())
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
func (st *stepState) optionThatDiffers(v *model.Variable, s stateVar, old, want shapes.Shape) string {
	storedTemporal := st.scope.Store().GetVariable(svSnapshots.ofVariable(st.root.Scope(), v.Path())) != nil
	temporal := st.cfg.mode == Temporal
	differs := func(axis int) bool {
		return old.Rank() == want.Rank() && old.Rank() > axis && old.Dim(axis) != want.Dim(axis)
	}
	switch {
	case temporal && !storedTemporal:
		return "its Mode differs (the checkpoint trained this variable in matrix mode, this configuration in Mode(hooks.Temporal))"
	case !temporal && storedTemporal:
		return "its Mode differs (the checkpoint trained this variable in Mode(hooks.Temporal), this configuration in matrix mode)"
	case temporal && s == svSnapshots && differs(0):
		return fmt.Sprintf("its WarmUp differs (the checkpoint's is %d, this configuration's %d)", old.Dim(0), want.Dim(0))
	case temporal && s == svBasis && differs(1) && !differs(0):
		return fmt.Sprintf("its temporal Rank differs (the checkpoint's is %d, this configuration's %d)", old.Dim(1), want.Dim(1))
	case !temporal && s == svBasis && differs(0) && !differs(1):
		return fmt.Sprintf("its Side differs (the checkpoint's basis has %d rows, this configuration's side has %d)", old.Dim(0), want.Dim(0))
	}
	return "its Mode, Rank, Side or WarmUp differ from the checkpoint's"
}

// bump increments the int64 counter s where cond holds and returns its new value.
func (st *stepState) bump(s stateVar, cond *Node) *Node {
	c := st.scalar(s)
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
		v.SetNodeValue(Where(IsFinite(x), x, upstream.ZeroOf(x)))
	}
}
