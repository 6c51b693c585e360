// Package hooks is the GoMLX glue of the gradient-subspace projector: an optimizer wrapper that
// trains selected variables inside low-rank subspaces of their gradients, the host-side monitor
// that reports what it did, and FLOP accounting of the compiled step.
//
// Using it is one change to a GoMLX program: wrap the optimizer it already uses.
//
//	opt := hooks.Subspace(optimizer.Adam().Done()).Rank(8).Done()
//	trainer := train.NewTrainer(backend, store, modelFn, lossFn, opt, trainMetrics, evalMetrics)
//
// By default every trainable float variable of rank ≥ 2 is projected, except matrices whose
// smaller side is ≤ the rank, embedding tables (read by a Gather) and output heads (no other
// weight's product follows them); biases and scalars keep full updates. Two subspaces (Mode):
//
//   - Matrix (default): a basis Q on one side of each weight seen as a matrix W [m, n] by how it
//     is used: a dense or DotGeneral weight as its contracted axes × the rest (y = x·W); a
//     convolution kernel ([kh, kw, in, out], or channels-first [out, in, kh, kw]) as
//     [kh·kw·in, out]; a weight used otherwise as [dimension 0, the rest]. PlanString names
//     the view of each. Where W feeds a single product or ungrouped convolution, the projected
//     gradient is computed directly — (x·Q)ᵀ·∂y, or for a kernel the kernel gradient of the
//     same convolution against ∂y·Q (r output channels instead of out) — and back-propagation
//     skips ∂W (GoMLX's VJPs for FusedDense, DotGeneral and ConvGeneral are wrapped to honour
//     that, for the marked nodes only); otherwise the full gradient is built and projected. The base optimizer runs on the coefficient, so its
//     state is [r, n] instead of [m, n], and the update Q·Δc is lifted back. Bases track the
//     gradients every step from the same skinny products (a power-iteration step xᵀ·(∂y·Cᵀ),
//     re-orthonormalised by Newton–Schulz; the optimizer's moments rotate with the basis).
//   - Temporal (the original method): each flattened gradient is projected on the top singular
//     vectors of a ring buffer of recent gradients; warm-up steps are full steps.
//
// Every CheckEvery steps a drift check reads the relative residual ‖g − proj(g)‖/‖g‖ (matrix mode:
// estimated every step from a sketch). The bases are refreshed (matrix mode: a burst of fast
// tracking) when the residual is above ResidualThreshold and has grown by more than DriftMargin
// since the basis's first check (a temporal basis never learned is replaced at once), when a
// smoothed loss stops falling for LossPatience checks, or when the curvature of the loss along the
// last step jumps above CurvatureFactor times its smoothed magnitude (see Policy). All of it runs inside the one compiled step graph, with no control flow in matrix
// mode: phases come from a step counter held in a variable, so neither phase switches nor
// refreshes recompile anything. The state (bases, snapshots, counters) lives in GoMLX
// variables under the "subspace" scope, so checkpoints carry it.
package hooks

import (
	"fmt"
	"math"
	"regexp"

	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gradsub/gradsub/projector"
)

// Hyperparameter names, readable from the scope's params by Config.FromScope, in GoMLX's style.
const (
	ParamRank              = "subspace_rank"
	ParamVarianceThreshold = "subspace_variance_threshold"
	ParamWarmUp            = "subspace_warmup"
	ParamCheckEvery        = "subspace_check_every"
	ParamResidualThreshold = "subspace_residual_threshold"
	ParamLossPatience      = "subspace_loss_patience"
	ParamWeightDecay       = "subspace_weight_decay"
	ParamMode              = "subspace_mode"
	ParamMinRank           = "subspace_min_rank"
	ParamMaxRank           = "subspace_max_rank"
	ParamTrackingRate      = "subspace_tracking_rate"
	ParamExplodeFactor     = "subspace_explode_factor"
	ParamFastTrackingRate  = "subspace_fast_tracking_rate"
	ParamTrackingFraction  = "subspace_tracking_fraction"
	ParamDriftMargin       = "subspace_drift_margin"
	ParamCurvatureFactor   = "subspace_curvature_factor"
	ParamGrowAbove         = "subspace_grow_above"
	ParamShrinkBelow       = "subspace_shrink_below"
	ParamFullUpdateEvery   = "subspace_full_update_every"
	ParamRankPatience      = "subspace_rank_patience"
	ParamSide              = "subspace_side"     // "auto" (each variable's smaller side), "left" or "right"
	ParamEnabled           = "subspace_enabled"  // false: the base optimizer alone
	ParamMatching          = "subspace_matching" // a regular expression of variable paths; "": the default selection
)

// DefaultParams returns every Param* hyperparameter with its default value. GoMLX's
// commandline.ParseSettings (a program's -set flag) only sets params the store already holds:
// register these with the program's own defaults, then read them with Config.FromScope.
//
//	store.SetParams(hooks.DefaultParams())
//	commandline.ParseSettings(store, *flagSettings) // -set "subspace_rank=16;subspace_mode=temporal"
//	opt := hooks.Subspace(optimizer.Adam().Done()).FromScope(store.RootScope()).Done()
func DefaultParams() map[string]any {
	c := Subspace(nil)
	params := map[string]any{ParamMode: c.mode.String(), ParamSide: c.sideName(), ParamMatching: ""}
	for _, f := range c.paramFields() {
		switch v := f.field.(type) {
		case *int:
			params[f.key] = *v
		case *float64:
			params[f.key] = *v
		case *bool:
			params[f.key] = *v
		}
	}
	return params
}

// paramField binds a numeric or boolean Param* to the Config field it sets.
type paramField struct {
	key   string
	field any // *int, *float64 or *bool
}

// paramFields lists c's fields that params set, one source for FromScope (which reads them) and
// DefaultParams (which reports a default configuration's values).
func (c *Config) paramFields() []paramField {
	p := &c.policy
	return []paramField{
		{ParamRank, &c.rank}, {ParamVarianceThreshold, &c.varianceThreshold}, {ParamWarmUp, &c.warmUp},
		{ParamWeightDecay, &c.weightDecay}, {ParamEnabled, &c.enabled},
		{ParamCheckEvery, &p.CheckEvery}, {ParamResidualThreshold, &p.ResidualThreshold}, {ParamDriftMargin, &p.DriftMargin},
		{ParamLossPatience, &p.LossPatience}, {ParamCurvatureFactor, &p.CurvatureFactor}, {ParamFullUpdateEvery, &p.FullUpdateEvery},
		{ParamTrackingRate, &p.TrackingRate}, {ParamFastTrackingRate, &p.FastTrackingRate}, {ParamTrackingFraction, &p.TrackingFraction},
		{ParamExplodeFactor, &p.ExplodeFactor},
		{ParamMinRank, &p.MinRank}, {ParamMaxRank, &p.MaxRank}, {ParamGrowAbove, &p.GrowAbove}, {ParamShrinkBelow, &p.ShrinkBelow},
		{ParamRankPatience, &p.RankPatience},
	}
}

// sideName is the ParamSide value of c's side: "auto", "left" or "right".
func (c *Config) sideName() string {
	if c.side == sideAuto {
		return "auto"
	}
	return projector.Side(c.side).String()
}

// Defaults, chosen to work on small problems without tuning.
const (
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
)

// StateScope is the scope (under the optimizer's scope) holding the projector's variables.
const StateScope = "subspace"

// Mode selects the subspace a variable's gradient is projected on.
type Mode int

const (
	// Matrix (the default) keeps an orthonormal basis Q on one side of each weight matrix and,
	// where the weight is used in a single product y = x·W, computes the projected gradient
	// directly as (x·Q)ᵀ·∂y: back-propagation never builds ∂W. The base optimizer's state lives
	// on the coefficient ([r, n] or [m, r]).
	Matrix Mode = iota
	// Temporal is the original method: the flattened gradient is projected on the top singular
	// vectors of a stack of recent gradients, after a full backward pass. It saves optimizer
	// state and work, not gradient FLOPs. Warm-up steps are full steps.
	Temporal
)

func (m Mode) String() string {
	if m == Temporal {
		return "temporal"
	}
	return "matrix"
}

// ParseMode reads "matrix" or "temporal".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "matrix":
		return Matrix, nil
	case "temporal":
		return Temporal, nil
	}
	return Matrix, fmt.Errorf("unknown subspace mode %q (use matrix or temporal)", s)
}

// sideAuto lets the plan pick the smaller side of each matrix.
const sideAuto = -1

// Config builds the subspace optimizer; create it with Subspace and finish with Done.
type Config struct {
	base              optimizer.Interface
	mode              Mode
	side              int // sideAuto, or a projector.Side
	enabled           bool
	rank              int
	varianceThreshold float64
	warmUp            int
	policy            Policy
	weightDecay       float64
	selectFn          func(v *model.Variable) bool
	selectDesc        string
	explicit          bool // variables chosen by the user: impossible ones are errors, not skipped
	fromScope         bool // FromScope was called: the first build reads the params again
	paramErr          error
}

// Subspace starts the configuration of a gradient-subspace optimizer wrapping base, which must be
// one of GoMLX's optimizers or any optimizer that also implements
// UpdateGraphWithGradients (train.OptimizeWithGradients): SGD, Adam, AdamW, RMSProp do.
func Subspace(base optimizer.Interface) *Config {
	return &Config{
		base:       base,
		mode:       Matrix,
		side:       sideAuto,
		enabled:    true,
		rank:       DefaultRank,
		warmUp:     DefaultWarmUp,
		policy:     DefaultPolicy(),
		selectFn:   DefaultSelection,
		selectDesc: "every trainable float variable of rank ≥ 2",
	}
}

// FromScope reads the hyperparameters set in the scope's params (see the Param* constants and
// DefaultParams), keeping the current values for those not set. The optimizer reads them again
// from the training scope when it builds its first step, so params set after FromScope (a -set
// flag parsed later) are not lost. A param of the wrong type (a string where a number is
// wanted) is reported by Validate, and by the first step, naming the param.
func (c *Config) FromScope(scope *model.Scope) *Config {
	c.fromScope = true
	for _, f := range c.paramFields() {
		switch v := f.field.(type) {
		case *int:
			*v = readParam(c, scope, f.key, *v)
		case *float64:
			*v = readParam(c, scope, f.key, *v)
		case *bool:
			*v = readParam(c, scope, f.key, *v)
		}
	}
	switch side := readParam(c, scope, ParamSide, c.sideName()); side {
	case "auto":
		c.side = sideAuto
	case projector.Left.String():
		c.side = int(projector.Left)
	case projector.Right.String():
		c.side = int(projector.Right)
	default:
		if c.paramErr == nil {
			c.paramErr = fmt.Errorf("%s: unknown side %q (use auto, left or right)", ParamSide, side)
		}
	}
	if pattern := readParam(c, scope, ParamMatching, ""); pattern != "" {
		c.Matching(pattern)
	}
	if mode, err := ParseMode(readParam(c, scope, ParamMode, c.mode.String())); err != nil {
		c.paramErr = fmt.Errorf("%s: %w", ParamMode, err)
	} else {
		c.mode = mode
	}
	return c
}

// readParam is model.GetParamOr with its panic on a param of another type turned into the
// configuration's error (the first one found), keeping the current value.
func readParam[T any](c *Config, scope *model.Scope, key string, current T) (value T) {
	defer func() {
		if r := recover(); r != nil {
			if c.paramErr == nil {
				c.paramErr = fmt.Errorf("param %q has the wrong type (want %T, e.g. %v): %v", key, current, current, r)
			}
			value = current
		}
	}()
	return model.GetParamOr(scope, key, current)
}

// Mode selects the matrix (default) or the temporal subspace.
func (c *Config) Mode(mode Mode) *Config { c.mode = mode; return c }

// Side fixes the side of the matrix subspace's basis for every variable (projector.Left: Q on
// W's input side; projector.Right: on its output side). By default each variable takes its
// smaller side: the basis is cheaper to learn and store.
func (c *Config) Side(side projector.Side) *Config { c.side = int(side); return c }

// Enabled turns projection on (the default) or off. Off, the wrapper delegates every call to the
// base optimizer unchanged: training is exactly that of the base optimizer.
func (c *Config) Enabled(enabled bool) *Config { c.enabled = enabled; return c }

// Rank sets k, the number of directions kept per variable (the maximum, if VarianceThreshold is
// set). It must be at least 1; in matrix mode below each projected matrix's smaller side (the
// default selection leaves out matrices it would not shrink), in temporal mode at most WarmUp
// (n gradients span at most n directions) and the variable's number of elements.
func (c *Config) Rank(k int) *Config { c.rank = k; return c }

// VarianceThreshold in (0, 1] chooses the rank at each SVD: the fewest leading directions (at most
// Rank) explaining this share of the recent gradients' energy. Zero (the default) keeps Rank.
func (c *Config) VarianceThreshold(share float64) *Config { c.varianceThreshold = share; return c }

// WarmUp sets N0. Matrix mode: the steps of fast tracking at the start and after each refresh.
// Temporal mode: the number of full steps whose gradients are recorded before the first SVD, and
// the number of recent gradients a refresh learns from.
func (c *Config) WarmUp(steps int) *Config { c.warmUp = steps; return c }

// Policy replaces the drift controller's rules (see Policy; start from DefaultPolicy). The
// setters below change single fields of it.
func (c *Config) Policy(p Policy) *Config { c.policy = p; return c }

// CheckEvery sets Policy.CheckEvery, K: a drift check runs every K steps after warm-up. Zero
// disables drift checks.
func (c *Config) CheckEvery(steps int) *Config { c.policy.CheckEvery = steps; return c }

// ResidualThreshold sets Policy.ResidualThreshold: the relative residual ‖g − VVᵀg‖/‖g‖ above
// which a check refreshes the basis. It must be in (0, 1]; 1 disables the residual trigger.
func (c *Config) ResidualThreshold(r float64) *Config { c.policy.ResidualThreshold = r; return c }

// TrackingRate sets Policy.TrackingRate and FastTrackingRate: how fast matrix bases follow the
// gradients, after and during warm-up (and refreshes). 0 for slow keeps a basis fixed between
// refreshes, as GaLore does.
func (c *Config) TrackingRate(slow, fast float64) *Config {
	c.policy.TrackingRate, c.policy.FastTrackingRate = slow, fast
	return c
}

// ExplodeFactor sets Policy.ExplodeFactor: a step whose loss exceeds this multiple of the
// smoothed loss is skipped (at most ExplodePatience in a row). 0 turns the rule off; non-finite
// losses and gradients are always skipped.
func (c *Config) ExplodeFactor(factor float64) *Config { c.policy.ExplodeFactor = factor; return c }

// LossPatience sets Policy.LossPatience: how many consecutive checks without the smoothed loss
// falling trigger a refresh. Zero disables the loss trigger.
func (c *Config) LossPatience(checks int) *Config { c.policy.LossPatience = checks; return c }

// RankBounds turns on adaptive rank (Policy.MinRank, Policy.MaxRank): a variable's rank grows
// while its residual stays high and shrinks while it stays low, within [minRank, maxRank].
func (c *Config) RankBounds(minRank, maxRank int) *Config {
	c.policy.MinRank, c.policy.MaxRank = minRank, maxRank
	return c
}

// WeightDecay applies decoupled weight decay (AdamW-style, scaled by the learning rate) to the
// projected variables' full values. The base optimizer only sees their coefficients, so an AdamW
// base decays the unprojected variables itself but needs this for the projected ones.
func (c *Config) WeightDecay(decay float64) *Config { c.weightDecay = decay; return c }

// Variables selects the projected variables by their full path (e.g. "/dense_0/weights"); the
// default selection is replaced. Each named variable must exist and be projectable.
func (c *Config) Variables(paths ...string) *Config {
	set := make(map[string]bool, len(paths))
	for _, p := range paths {
		set[p] = true
	}
	c.selectFn = func(v *model.Variable) bool { return set[v.Path()] }
	c.selectDesc = fmt.Sprintf("variables %q", paths)
	c.explicit = true
	return c
}

// Matching selects the projected variables whose full path matches the regular expression.
func (c *Config) Matching(pattern string) *Config {
	re, err := regexp.Compile(pattern)
	if err != nil {
		c.selectFn = nil
		c.selectDesc = fmt.Sprintf("invalid pattern %q: %v", pattern, err)
		return c
	}
	c.selectFn = func(v *model.Variable) bool { return re.MatchString(v.Path()) }
	c.selectDesc = fmt.Sprintf("variables matching %q", pattern)
	c.explicit = true
	return c
}

// Select sets a predicate choosing the projected variables among the trainable ones.
func (c *Config) Select(fn func(v *model.Variable) bool) *Config {
	c.selectFn = fn
	c.selectDesc = "a custom predicate"
	c.explicit = true
	return c
}

// DefaultSelection projects every float variable of rank ≥ 2. Biases, scales and scalars keep full
// updates; they are small and their gradients are not low-rank in any useful sense. Among the
// variables it selects, the plan still leaves out (unless they are chosen by name with Variables,
// Matching or Select) matrices whose smaller side is ≤ the rank, embedding tables and output
// heads: a basis on their vocabulary or class side would train only Rank mixtures of them.
func DefaultSelection(v *model.Variable) bool {
	return v.Shape().Rank() >= 2 && v.DType().IsFloat()
}

// Validate checks the configuration alone (variables are checked when the graph is built).
func (c *Config) Validate() error {
	switch {
	case c.paramErr != nil:
		return fmt.Errorf("hooks.Subspace: %v", c.paramErr)
	case c.base == nil:
		return fmt.Errorf("hooks.Subspace: the base optimizer is nil (wrap e.g. optimizer.Adam().Done())")
	case c.selectFn == nil:
		return fmt.Errorf("hooks.Subspace: %s", c.selectDesc)
	case c.rank < 1:
		return fmt.Errorf("hooks.Subspace: Rank(%d) is impossible: use a rank ≥ 1", c.rank)
	case c.mode != Matrix && c.mode != Temporal:
		return fmt.Errorf("hooks.Subspace: Mode(%d) is neither hooks.Matrix nor hooks.Temporal", int(c.mode))
	case math.IsNaN(c.varianceThreshold) || math.IsInf(c.varianceThreshold, 0):
		return fmt.Errorf("hooks.Subspace: VarianceThreshold(%g) must be a finite number in [0, 1] (e.g. 0.9; 0 keeps Rank directions)", c.varianceThreshold)
	case !(c.weightDecay >= 0 && c.weightDecay <= 1):
		return fmt.Errorf("hooks.Subspace: WeightDecay(%g) is outside [0, 1] (AdamW's decay coefficient, e.g. 0.01; 0 turns it off)", c.weightDecay)
	case c.mode == Temporal && c.warmUp < c.rank:
		return fmt.Errorf("hooks.Subspace: WarmUp(%d) is shorter than Rank(%d): n warm-up gradients span at most n directions (use WarmUp ≥ %d or Rank ≤ %d)", c.warmUp, c.rank, c.rank, c.warmUp)
	case c.warmUp < 1:
		return fmt.Errorf("hooks.Subspace: WarmUp(%d) must be ≥ 1: the first basis is learned during warm-up", c.warmUp)
	case c.side != sideAuto && c.side != int(projector.Left) && c.side != int(projector.Right):
		return fmt.Errorf("hooks.Subspace: Side(%d) is neither projector.Left nor projector.Right", c.side)
	case c.varianceThreshold > 0 && c.mode == Matrix:
		return fmt.Errorf("hooks.Subspace: VarianceThreshold applies to the temporal subspace: use Mode(hooks.Temporal), or drop it (the matrix subspace keeps Rank directions)")
	case c.varianceThreshold < 0 || c.varianceThreshold > 1:
		return fmt.Errorf("hooks.Subspace: VarianceThreshold(%g) is outside [0, 1] (e.g. 0.9; 0 keeps Rank directions)", c.varianceThreshold)
	}
	if c.policy.FastTrackingRate == 0 { // 0: the defaults
		c.policy.FastTrackingRate = max(DefaultFastTrackingRate, c.policy.TrackingRate)
	}
	if c.policy.TrackingFraction == 0 {
		c.policy.TrackingFraction = DefaultTrackingFraction
	}
	if err := c.policy.Validate(c.rank); err != nil {
		return fmt.Errorf("hooks.Subspace: %v", err)
	}
	if c.mode == Temporal && c.policy.adaptive(c.rank) {
		return fmt.Errorf("hooks.Subspace: adaptive rank (RankBounds) applies to the matrix subspace; the temporal subspace adapts its rank with VarianceThreshold")
	}
	if _, ok := c.base.(gradientOptimizer); c.enabled && !ok {
		return fmt.Errorf("hooks.Subspace: base optimizer %T does not implement UpdateGraphWithGradients "+
			"(train.OptimizeWithGradients), which the projector needs to feed it projected coefficients; "+
			"GoMLX's SGD, Adam, AdamW and RMSProp implement it", c.base)
	}
	return nil
}

// WarmUpSteps returns the configured warm-up length N0.
func (c Config) WarmUpSteps() int { return c.warmUp }

// DriftPolicy returns the drift controller's rules.
func (c Config) DriftPolicy() Policy { return c.policy }

// Done returns the optimizer. An invalid configuration is reported by Validate, and by the first
// TrainStep (as the error of building the step graph).
func (c *Config) Done() *Optimizer {
	err := c.Validate() // fills FastTrackingRate's default
	return &Optimizer{cfg: *c, configErr: err}
}
