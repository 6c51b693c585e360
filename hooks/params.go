package hooks

import (
	"fmt"

	"github.com/gomlx/gomlx/ml/model"
	"github.com/gradsub/gradsub/projector"
)

// Hyperparameter names, readable from the scope's params by Config.FromScope, in GoMLX's style.
const (
	ParamRank              = "subspace_rank" // 0: the automatic rank (AutoRank; temporal: DefaultRank)
	ParamVarianceThreshold = "subspace_variance_threshold"
	ParamWarmUp            = "subspace_warmup"
	ParamCheckEvery        = "subspace_check_every"
	ParamResidualThreshold = "subspace_residual_threshold"
	ParamLossPatience      = "subspace_loss_patience"
	ParamWeightDecay       = "subspace_weight_decay"
	ParamScale             = "subspace_scale"            // the lifted step's multiplier (1; 0: automatic, √(side/rank))
	ParamComplement        = "subspace_complement"       // random complement directions per matrix (-1: automatic; 0: none)
	ParamComplementScale   = "subspace_complement_scale" // their step against the tracked directions'
	ParamScaleAdaptation   = "subspace_scale_adaptation" // the step-length rule's rate (0: off)
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
//	set, err := commandline.ParseSettings(store, *flagSettings) // -set "subspace_rank=16;subspace_mode=temporal"
//	ckpt, err := checkpoint.Build(store).Dir(dir).ExcludeParams(set...).Done() // -set wins on resume
//	opt := hooks.Subspace(optimizer.Adam().Done()).FromScope(store.RootScope()).Done()
//
// Without ExcludeParams a resumed checkpoint's params replace what -set gave.
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
		{ParamWeightDecay, &c.weightDecay}, {ParamScale, &c.scale}, {ParamEnabled, &c.enabled},
		{ParamComplement, &c.complement}, {ParamComplementScale, &c.complementScale}, {ParamScaleAdaptation, &c.scaleAdaptation},
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
	if !c.side.fixed {
		return "auto"
	}
	return c.side.side.String()
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
		c.side = sideChoice{}
	case projector.Left.String():
		c.side = sideChoice{fixed: true, side: projector.Left}
	case projector.Right.String():
		c.side = sideChoice{fixed: true, side: projector.Right}
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
