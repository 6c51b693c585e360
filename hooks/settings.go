package hooks

import (
	"math"

	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gradsub/gradsub/hooks/internal/step"
)

// settings is what the step graph reads of the configuration (step.Settings).
func (c *Config) settings() *step.Settings {
	return &step.Settings{
		Base: c.base, Mode: c.mode, Policy: c.policy, Rank: c.rank, WarmUp: c.warmUp,
		TemporalRank: c.temporalRank(), VarianceThreshold: c.varianceThreshold, Scale: c.scale,
		ScaleAdaptation: c.scaleAdaptation, WeightDecay: c.weightDecay, BaseIsSGD: c.baseIsSGD(),
		ScaleOf: c.ScaleOf, ComplementOf: c.complementOf, ComplementFactor: c.complementFactor,
	}
}

// The complement's and the lifted step's sizes, from the configuration ([Config.Complement],
// [Config.ComplementScale], [Config.Scale]).

// baseIsSGD says whether the base optimizer is plain SGD, whose step is proportional to the
// gradient; Adam, AdamW and RMSProp normalise it, so its length does not grow with the loss.
func (c Config) baseIsSGD() bool {
	_, sgd := c.base.(*optimizer.SGDConfig)
	return sgd
}

// complementOf is the number of complement directions of a matrix projected at rank on a side of
// sideRows rows: Complement's, or ComplementOf's, at most the side's directions outside the basis.
func (c Config) complementOf(sideRows, rank int) int {
	s := c.complement
	if s == AutoComplement {
		if c.baseIsSGD() {
			return 0 // plain SGD: its full-rank step is state-free already (measured: no gain, examples/mlp)
		}
		s = ComplementOf(sideRows, rank)
	}
	return max(0, min(s, sideRows-rank))
}

// complementFactor is the length of each complement direction's step against the tracked
// directions' average, for a matrix projected at rank on a side of sideRows rows with s complement
// directions: ComplementScale·√((sideRows − rank)/s). The root spreads the length a full-rank
// step would take outside the basis (sideRows − rank directions) over the s drawn, so that the
// complement's whole step does not grow with s; more directions make it less noisy, not longer.
func (c Config) complementFactor(sideRows, rank, s int) float64 {
	return c.complementScale * math.Sqrt(float64(sideRows-rank)/float64(max(s, 1)))
}

// ScaleOf is the multiplier of the lifted step of a matrix projected at rank on a side of
// sideRows rows: Scale's value, or √(sideRows/rank) for Scale(0).
func (c Config) ScaleOf(sideRows, rank int) float64 {
	if c.scale == 0 && rank > 0 {
		return math.Sqrt(float64(sideRows) / float64(rank))
	}
	return c.scale
}
