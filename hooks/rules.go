package hooks

import "github.com/gradsub/gradsub/hooks/internal/rules"

// The drift controller's rule book, the modes and the routes, defined in hooks/internal/rules
// (the policy and tuning that build no graph) and named here.
type (
	// Policy is the drift controller's rule book: when the bases are checked, what makes a check
	// refresh them, how a variable's rank adapts and how often a variable gets a full update.
	// The zero value disables every rule; start from DefaultPolicy. Its fields are documented
	// where it is defined: go doc github.com/gradsub/gradsub/hooks/internal/rules.Policy.
	Policy = rules.Policy
	// Mode selects the subspace a variable's gradient is projected on: Matrix or Temporal.
	Mode = rules.Mode
	// Cause is why a basis was learned or refreshed (Report.LastLearnCause, Event.Cause).
	Cause = rules.Cause
	// Route is how a variable's gradient reaches the base optimizer (PlanEntry.Route).
	Route = rules.Route
)

// Modes: Matrix (the default: a basis on one side of each weight matrix, the projected gradient
// computed directly from the product's output gradient) and Temporal (the original method: the
// flattened gradient on the top singular vectors of recent gradients).
const (
	Matrix   = rules.Matrix
	Temporal = rules.Temporal
)

// Routes (Route).
const (
	RouteTemporal = rules.RouteTemporal // flattened gradient projected on a learned temporal basis
	RouteDirect   = rules.RouteDirect   // matrix subspace, projected gradient computed from ∂y; no ∂W
	RoutePostHoc  = rules.RoutePostHoc  // matrix subspace, full gradient computed then projected
	RouteFull     = rules.RouteFull     // not projected
)

// Refresh causes (Cause).
const (
	CauseNone      = rules.CauseNone
	CauseWarmUp    = rules.CauseWarmUp    // a basis learned during (temporal: at the end of) warm-up
	CauseResidual  = rules.CauseResidual  // a drift check found the residual above the threshold
	CauseLoss      = rules.CauseLoss      // the smoothed loss stopped falling for LossPatience checks
	CauseCurvature = rules.CauseCurvature // the curvature along a step jumped above CurvatureFactor times its smoothed magnitude
	CauseRank      = rules.CauseRank      // a variable's rank changed (the bases are re-learned at the new ranks)
)

// Defaults and tuning constants, chosen to work on small problems without tuning; each is
// documented where it is defined (hooks/internal/rules).
const (
	DefaultRank              = rules.DefaultRank       // the temporal subspace's k when Rank is not set
	DefaultWarmUp            = rules.DefaultWarmUp     // WarmUp's default
	DefaultCheckEvery        = rules.DefaultCheckEvery // Policy.CheckEvery's default
	DefaultResidualThreshold = rules.DefaultResidualThreshold
	DefaultLossPatience      = rules.DefaultLossPatience
	DefaultTrackingRate      = rules.DefaultTrackingRate     // Policy.TrackingRate's default
	DefaultFastTrackingRate  = rules.DefaultFastTrackingRate // Policy.FastTrackingRate's default
	DefaultTrackingFraction  = rules.DefaultTrackingFraction // the share of a batch's rows the bases are tracked from
	MaxTrackingRate          = rules.MaxTrackingRate
	LossEMADecay             = rules.LossEMADecay // the loss rule's smoothing (≈ a 10-step window)
	LossMinImprovement       = rules.LossMinImprovement
	CurvatureEMADecay        = rules.CurvatureEMADecay // the curvature rule's smoothing
	CurvatureWarmUp          = rules.CurvatureWarmUp
	DefaultExplodeFactor     = rules.DefaultExplodeFactor // Policy.ExplodeFactor's default
	ExplodePatience          = rules.ExplodePatience      // steps skipped in a row for an exploding loss before it is a new level
	DivergenceWindow         = rules.DivergenceWindow     // a run's first steps, where an explosion is a divergence
	DivergenceHold           = rules.DivergenceHold       // the most steps in a row a divergence is held
	BasisTolerance           = rules.BasisTolerance       // the largest |QᵀQ − I| entry of a stored basis; one further off restarts
	MinTrackingRows          = rules.MinTrackingRows      // the fewest rows of a batch the bases are tracked from
	ResidualEMADecay         = rules.ResidualEMADecay     // the smoothing of a matrix's sketch residual
	DefaultScaleAdaptation   = rules.DefaultScaleAdaptation
)

// StateScope is the scope (under the optimizer's scope) holding the projector's variables.
const StateScope = rules.StateScope

// DefaultPolicy works on both examples without tuning (rules.DefaultPolicy).
func DefaultPolicy() Policy { return rules.DefaultPolicy() }

// ParseMode reads "matrix" or "temporal".
func ParseMode(s string) (Mode, error) { return rules.ParseMode(s) }
