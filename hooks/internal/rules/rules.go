// Package rules holds the projector's policy, tuning and state schema: the drift controller's
// rule book (Policy), the modes, the defaults and constants every rule is tuned by, and the
// type of a state-schema entry. Nothing here builds graph: hooks/internal/step builds the step
// from it, and package hooks re-exports the public names.
package rules

// Defaults, chosen to work on small problems without tuning.
const (
	// DefaultRank is the temporal subspace's k when Rank is not set. The matrix subspace's
	// rank, when Rank is not set, is a share of each matrix's smaller side (AutoRank).
	DefaultRank              = 4
	DefaultWarmUp            = 10
	DefaultCheckEvery        = 50
	DefaultResidualThreshold = 0.5
	DefaultLossPatience      = 4
	// DefaultTrackingRate and DefaultFastTrackingRate: how fast matrix bases follow the
	// gradients (Policy.TrackingRate).
	DefaultTrackingRate     = 1.0
	DefaultFastTrackingRate = 4.0
	// DefaultTrackingFraction: the share of a batch's rows the bases are tracked from.
	DefaultTrackingFraction = 0.25
	// MaxTrackingRate bounds the rates: the orthonormalisation's length grows with it.
	MaxTrackingRate = 64.0
	// LossEMADecay smooths the loss for the plateau signal (≈ a 10-step window).
	LossEMADecay = 0.9
	// LossMinImprovement: a check counts as progress when the smoothed loss fell by this share.
	LossMinImprovement = 1e-3
	// CurvatureEMADecay smooths the magnitude of the curvature signal (≈ a 10-step window).
	CurvatureEMADecay = 0.9
	// CurvatureWarmUp: the curvature rule judges jumps only after this many measurements.
	CurvatureWarmUp = 10
	// DefaultExplodeFactor is Policy.ExplodeFactor's default: after warm-up, a step whose loss
	// exceeds this multiple of the smoothed loss is skipped (like a step with a non-finite loss
	// or gradient).
	DefaultExplodeFactor = 100.0
	// ExplodePatience: after this many steps skipped in a row for an exploding loss, the next
	// is taken and the smoothed loss restarts from it (a lasting shift, not a spike).
	ExplodePatience = 3
	// DivergenceWindow: a loss that explodes in a run's first steps (this many, or warm-up if
	// longer) is a divergence, judged against √ExplodeFactor and held (DivergenceHold); after
	// Adam-like optimizers, only the second explosion there (the first is taken on trial).
	DivergenceWindow = 10
	// DivergenceHold: while a divergence is held, the guard skips up to this many steps in a row
	// before it lets one through (never for good): time for the user to lower the learning rate.
	DivergenceHold = 200
)

// StateScope is the scope (under the optimizer's scope) holding the projector's variables.
const StateScope = "subspace"

// BasisTolerance is the largest |QᵀQ − I| entry a stored basis may have: tracking keeps bases
// orthonormal to about 1e-6 (float32); one further off was damaged and restarts.
const BasisTolerance = 1e-2

// MinTrackingRows is the fewest rows of a batch the bases are tracked from
// (Policy.TrackingFraction applies above it): fewer make a noisy estimate of the covariance.
const MinTrackingRows = 64

// ResidualEMADecay smooths a matrix variable's sketch residual over steps (≈ a 10-step window):
// a sketch of a few columns is noisy, and the drift rules read the residual at checks.
const ResidualEMADecay = 0.9

// DefaultScaleAdaptation is ScaleAdaptation's default rate: the log of a matrix's step factor
// moves by at most this a step. Measured on the quality suite, the residual MLP and the
// transformer (docs/rank.md).
const DefaultScaleAdaptation = 0.2
