package hooks

import (
	"fmt"
	"regexp"

	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gradsub/gradsub/projector"
)

// sideChoice is the configured side of the matrix bases: fixed, or each variable's smaller side
// (the plan picks).
type sideChoice struct {
	fixed bool
	side  projector.Side
}

// of is the side of a matrix [m, n].
func (s sideChoice) of(m, n int) projector.Side {
	if s.fixed {
		return s.side
	}
	return projector.SmallerSide(m, n)
}

// Config builds the subspace optimizer; create it with Subspace and finish with Done.
type Config struct {
	base              optimizer.Interface
	mode              Mode
	side              sideChoice
	enabled           bool
	rank              int // 0: automatic (AutoRank; temporal: DefaultRank)
	varianceThreshold float64
	warmUp            int
	policy            Policy
	weightDecay       float64
	scale             float64 // the lifted step's multiplier; 0: automatic (ScaleOf)
	complement        int     // random complement directions per matrix and step; AutoComplement: automatic; 0: none
	complementScale   float64 // their step against the tracked directions' (ComplementScale)
	scaleAdaptation   float64 // the step-length rule's rate (ScaleAdaptation); 0: off
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
		base:            base,
		mode:            Matrix,
		enabled:         true,
		scale:           1,
		complement:      AutoComplement,
		complementScale: DefaultComplementScale,
		scaleAdaptation: DefaultScaleAdaptation,
		warmUp:          DefaultWarmUp,
		policy:          DefaultPolicy(),
		selectFn:        DefaultSelection,
		selectDesc:      "every trainable float variable of rank ≥ 2",
	}
}

// Mode selects the matrix (default) or the temporal subspace.
func (c *Config) Mode(mode Mode) *Config { c.mode = mode; return c }

// Side fixes the side of the matrix subspace's basis for every variable (projector.Left: Q on
// W's input side; projector.Right: on its output side). By default each variable takes its
// smaller side: the basis is cheaper to learn and store.
func (c *Config) Side(side projector.Side) *Config {
	c.side = sideChoice{fixed: true, side: side}
	return c
}

// Enabled turns projection on (the default) or off. Off, the wrapper delegates every call to the
// base optimizer unchanged: training is exactly that of the base optimizer.
func (c *Config) Enabled(enabled bool) *Config { c.enabled = enabled; return c }

// Rank sets k, the number of directions kept per variable (the maximum, if VarianceThreshold is
// set): in matrix mode below each projected matrix's smaller side (the default selection leaves
// out matrices it would not shrink), in temporal mode at most WarmUp (n gradients span at most n
// directions) and the variable's number of elements. Without Rank, or with Rank(0), the rank is
// automatic: each matrix keeps DefaultRankShare of its smaller side, at least MinAutoRank, within
// a cost cap, or is left out (AutoRank: 16, and 32 complement directions, for a matrix of side
// 256 to 1,024 at a large batch; without the complement PlainAutoRank's 48 at 256); convolution kernels are left out
// (no share that keeps their quality pays), and the temporal subspace keeps DefaultRank
// directions.
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
// while its residual stays high and shrinks while it stays low, within [minRank, maxRank]. An
// automatic rank (no Rank set) starts within the bounds too.
func (c *Config) RankBounds(minRank, maxRank int) *Config {
	c.policy.MinRank, c.policy.MaxRank = minRank, maxRank
	return c
}

// WeightDecay applies decoupled weight decay (AdamW-style, scaled by the learning rate) to the
// projected variables' full values. The base optimizer only sees their coefficients, so an AdamW
// base decays the unprojected variables itself but needs this for the projected ones.
func (c *Config) WeightDecay(decay float64) *Config { c.weightDecay = decay; return c }

// Scale multiplies the lifted coefficient step of every projected variable (GaLore's α). The
// default, 1, is GaLore's scale 1: at the base optimizer's learning rate, an elementwise-normalising
// optimizer (Adam, AdamW, RMSProp) then moves a matrix projected at rank r on a side of d rows by
// about √(r/d) of the distance it would move it unprojected, as it normalises r·n coordinates
// instead of d·n. Scale(0) is automatic: √(d/r) per matrix, a step of the unprojected length
// (APOLLO's scaling). It is the same as raising those matrices' learning rate, so compare it with
// a learning-rate sweep (docs/rank.md): it helps where the learning rate was low for the
// projected run and hurts where it was already right. The automatic scale applies to the matrix
// subspace only.
func (c *Config) Scale(alpha float64) *Config { c.scale = alpha; return c }

// ScaleAdaptation sets the rate of the step-length rule (matrix mode, after a base optimizer that
// normalises its steps: Adam, AdamW, RMSProp). Such a step moves a matrix projected at rank r of
// d rows about √(r/d) as far as an unprojected one, which costs where the learning rate is low
// for the model. The rule multiplies each matrix's tracked step by a factor between 1 and
// √(d/r): it grows by rate·cos while successive coefficient gradients point the same way (the
// step is too short to turn them) and shrinks while they oppose (docs/rank.md). The complement's
// step keeps its own length (ComplementScale). 0 turns the rule off: the published method's
// fixed scale. The factor multiplies Scale's. Temporal mode ignores it.
func (c *Config) ScaleAdaptation(rate float64) *Config { c.scaleAdaptation = rate; return c }

// Complement sets how many random directions outside its basis each projected matrix also steps
// along, fresh every step (matrix mode): a state-free step for what the basis misses, so that
// low ranks keep quality (projector.ComplementDirections; docs/complement.md). Their coefficient
// rides in the basis's own product (rows·s·(m+n) more multiply-adds) and their step in the lift
// (s·m·n); they keep no optimizer state and no basis. Their step follows the base optimizer's
// on the basis (projector.ComplementStep): normalised after Adam, AdamW and RMSProp, in
// proportion to the gradient after others. AutoComplement (the default) takes ComplementOf's
// number, and none when the base optimizer is GoMLX's SGD (its full-rank step is state-free
// already; on the MLP table the complement lowered accuracy by up to 2 points with it); 0 turns
// the complement off (the step of the published method, GaLore's projection, with a tracked
// basis).
func (c *Config) Complement(directions int) *Config { c.complement = directions; return c }

// ComplementScale sets how far each complement direction moves against the tracked directions'
// average step (the RMS of the base optimizer's coefficient step): 1 moves it as far as a
// tracked direction. The default is DefaultComplementScale.
func (c *Config) ComplementScale(scale float64) *Config { c.complementScale = scale; return c }

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
