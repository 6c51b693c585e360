package hooks

import (
	"fmt"
	"math"

	"github.com/gomlx/gomlx/ml/train"
	"github.com/gradsub/gradsub/projector"
)

// Validate checks the configuration alone (variables are checked when the graph is built).
func (c *Config) Validate() error {
	switch {
	case c.paramErr != nil:
		return fmt.Errorf("hooks.Subspace: %v", c.paramErr)
	case c.base == nil:
		return fmt.Errorf("hooks.Subspace: the base optimizer is nil (wrap e.g. optimizer.Adam().Done())")
	case c.selectFn == nil:
		return fmt.Errorf("hooks.Subspace: %s", c.selectDesc)
	case c.rank < 0:
		return fmt.Errorf("hooks.Subspace: Rank(%d) is impossible: use a rank ≥ 1, or 0 for the automatic rank", c.rank)
	case c.mode != Matrix && c.mode != Temporal:
		return fmt.Errorf("hooks.Subspace: Mode(%d) is neither hooks.Matrix nor hooks.Temporal", int(c.mode))
	case math.IsNaN(c.varianceThreshold) || math.IsInf(c.varianceThreshold, 0):
		return fmt.Errorf("hooks.Subspace: VarianceThreshold(%g) must be a finite number in [0, 1] (e.g. 0.9; 0 keeps Rank directions)", c.varianceThreshold)
	case !(c.weightDecay >= 0 && c.weightDecay <= 1):
		return fmt.Errorf("hooks.Subspace: WeightDecay(%g) is outside [0, 1] (AdamW's decay coefficient, e.g. 0.01; 0 turns it off)", c.weightDecay)
	case c.complement < AutoComplement:
		return fmt.Errorf("hooks.Subspace: Complement(%d) is impossible: use a number of directions ≥ 0 (0 turns the complement off), or hooks.AutoComplement (%d) for the automatic number", c.complement, AutoComplement)
	case c.complement > 0 && c.mode == Temporal:
		return fmt.Errorf("hooks.Subspace: Complement applies to the matrix subspace: use Mode(hooks.Matrix), or drop it")
	case math.IsNaN(c.complementScale) || math.IsInf(c.complementScale, 0) || c.complementScale < 0:
		return fmt.Errorf("hooks.Subspace: ComplementScale(%g) must be a finite number ≥ 0 (the complement directions' step against the tracked directions' average; default %g)", c.complementScale, DefaultComplementScale)
	case !(c.scaleAdaptation >= 0 && c.scaleAdaptation <= 10):
		return fmt.Errorf("hooks.Subspace: ScaleAdaptation(%g) is outside [0, 10] (the step-length rule's rate per step, default %g; 0 turns it off)", c.scaleAdaptation, DefaultScaleAdaptation)
	case math.IsNaN(c.scale) || math.IsInf(c.scale, 0) || c.scale < 0:
		return fmt.Errorf("hooks.Subspace: Scale(%g) must be a finite number ≥ 0 (1: GaLore's scale 1, the default; 0: automatic, √(side/rank) per matrix)", c.scale)
	case c.scale == 0 && c.mode == Temporal:
		return fmt.Errorf("hooks.Subspace: the automatic Scale(0) applies to the matrix subspace: use Mode(hooks.Matrix), or a scale > 0 (1 is the default)")
	case c.mode == Temporal && c.warmUp < c.temporalRank():
		return fmt.Errorf("hooks.Subspace: WarmUp(%d) is shorter than Rank(%d): n warm-up gradients span at most n directions (use WarmUp ≥ %d or Rank ≤ %d)", c.warmUp, c.temporalRank(), c.temporalRank(), c.warmUp)
	case c.warmUp < 1:
		return fmt.Errorf("hooks.Subspace: WarmUp(%d) must be ≥ 1: the first basis is learned during warm-up", c.warmUp)
	case c.side.fixed && c.side.side != projector.Left && c.side.side != projector.Right:
		return fmt.Errorf("hooks.Subspace: Side(%d) is neither projector.Left nor projector.Right", c.side.side)
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
	if err := c.policy.Validate(c.rank); err != nil { // rank 0 (automatic): any bound makes it adaptive
		return fmt.Errorf("hooks.Subspace: %v", err)
	}
	if c.mode == Temporal && c.policy.Adaptive(c.rank) {
		return fmt.Errorf("hooks.Subspace: adaptive rank (RankBounds) applies to the matrix subspace; the temporal subspace adapts its rank with VarianceThreshold")
	}
	if _, ok := c.base.(train.OptimizeWithGradients); c.enabled && !ok {
		return fmt.Errorf("hooks.Subspace: base optimizer %T does not implement UpdateGraphWithGradients "+
			"(train.OptimizeWithGradients), which the projector needs to feed it projected coefficients; "+
			"GoMLX's SGD, Adam, AdamW and RMSProp implement it", c.base)
	}
	return nil
}
