package rules

import (
	"fmt"
	"math"
)

// Policy is the drift controller's rule book: when the bases are checked, what makes a check
// refresh them, how a variable's rank adapts and how often a variable gets a full update.
//
// Every signal is computed in the step graph, and every rule but one is applied there: phases,
// checks and refreshes never recompile the step. The rank rule is applied on the host between
// steps (Optimizer.AdaptRanks, called by a Monitor that knows the trainer), because a new rank
// changes the shapes of the basis, the coefficients and their optimizer state: the step graph is
// recompiled once per change.
//
// The zero value disables every rule; start from DefaultPolicy.
type Policy struct {
	// CheckEvery (K): a drift check runs every K steps after warm-up. 0 disables checks, and
	// with them every rule below.
	CheckEvery int

	// Tracking (matrix mode): every step moves each basis towards the power product of its
	// gradient (∂W·∂Wᵀ·Q, from the direct products) at TrackingRate, and at FastTrackingRate for
	// WarmUp steps from the start and from each refresh. A rate r moves the basis by up to about
	// r radians a step; 0 freezes it. Every step runs the same graph whatever the rate.
	TrackingRate, FastTrackingRate float64

	// TrackingFraction is the share of the batch's rows (the leading ones, at least
	// MinTrackingRows) whose products move the bases, on the direct path: the power iteration
	// needs only an estimate of the gradient's covariance, and over the whole batch its two
	// products would cost as much as the coefficient itself.
	TrackingFraction float64

	// Explosion guard: after warm-up, a step whose loss exceeds ExplodeFactor times the smoothed
	// loss is skipped like a non-finite one, at most ExplodePatience steps in a row (then the
	// loss is a new level: the step is taken and the smoothed loss restarts). 0 turns it off.
	ExplodeFactor float64

	// Residual rule: a check refreshes the bases when a variable's relative residual
	// ‖g − proj(g)‖/‖g‖ exceeds ResidualThreshold and has grown by more than DriftMargin since
	// the first check after its basis was learned. Matrix mode estimates it every step from a
	// sketch ∂W·Ω of a few random columns (smoothed over about 10 steps); temporal mode
	// measures it on the full gradient. The second condition
	// is what keeps the rule from refreshing blindly: near convergence, or in a model whose
	// gradients are not low-rank at this rank (a transformer at rank 8), the residual is high
	// but steady, and a new basis would serve no better. ResidualThreshold 1 disables the rule;
	// DriftMargin 0 makes it a plain threshold.
	ResidualThreshold float64
	DriftMargin       float64

	// Loss rule: a check refreshes when the smoothed loss has not fallen (by LossMinImprovement)
	// over LossPatience consecutive checks. 0 disables it.
	LossPatience int

	// Curvature rule: every projected step measures the curvature along the previous step,
	// κ = ⟨g_t − g_{t−1}, Δw⟩ / ‖Δw‖² (from the coefficients, which give the same value as the
	// full weights because the basis is orthonormal). A check refreshes when, since the last
	// check, |κ| exceeded CurvatureFactor times its smoothed magnitude: the loss surface
	// changed under the subspace. 0 disables it.
	CurvatureFactor float64

	// Full-update rule (temporal mode; a matrix basis follows growing directions by itself):
	// at every FullUpdateEvery-th check one projected variable, in turn, also
	// takes the part of its control gradient outside its subspace, scaled to at most the length
	// of its projected step (the norm-based scaling of Fira, Chen et al. 2024), so that no
	// direction is lost for good. 0 disables it.
	FullUpdateEvery int

	// Rank rule (adaptive rank): a variable's rank doubles, up to MaxRank, after RankPatience
	// consecutive checks with its residual above GrowAbove, and halves, down to MinRank, after
	// RankPatience checks below ShrinkBelow. MaxRank 0 (or ≤ Rank) disables growth; MinRank 0
	// (or ≥ Rank) disables shrinking. GrowAbove's default, 0.6, was measured: at 0.9 no variable of
	// the transformer or the quality suite's models ever grew (their smoothed residuals at rank
	// width/8–width/32 are 0.4–0.9); at 0.6 the transformer's (RankBounds(8, 32), 1,000 steps)
	// grew and its eval-loss gap to AdamW fell from 11% to 6% for 0.66 of AdamW's gradient FLOPs
	// instead of 0.59, while the MLP classifier's (residuals about 0.4) stayed put.
	MinRank, MaxRank       int
	GrowAbove, ShrinkBelow float64
	RankPatience           int
}

// DefaultPolicy works on both examples without tuning. A check every 50 steps measures a quarter
// of the batch; a refresh is a warm-started subspace iteration, so even a check that refreshes
// costs about one stock weight gradient. The examples measure the controller's share of the wall
// time (README: about 1% on the transformer). Adaptive rank is off: it changes the step's cost,
// which is the user's call.
func DefaultPolicy() Policy {
	return Policy{
		CheckEvery:        DefaultCheckEvery,
		ExplodeFactor:     DefaultExplodeFactor,
		TrackingRate:      DefaultTrackingRate,
		FastTrackingRate:  DefaultFastTrackingRate,
		TrackingFraction:  DefaultTrackingFraction,
		ResidualThreshold: DefaultResidualThreshold,
		DriftMargin:       0.15,
		LossPatience:      DefaultLossPatience,
		CurvatureFactor:   10,
		FullUpdateEvery:   4,
		GrowAbove:         0.6,
		ShrinkBelow:       0.2,
		RankPatience:      3,
	}
}

// Validate checks the policy against the configured rank; the errors name the field and a fix.
func (p Policy) Validate(rank int) error {
	for _, f := range []struct {
		name  string
		value float64
	}{{"ResidualThreshold", p.ResidualThreshold}, {"DriftMargin", p.DriftMargin}, {"ExplodeFactor", p.ExplodeFactor}, {"CurvatureFactor", p.CurvatureFactor},
		{"GrowAbove", p.GrowAbove}, {"ShrinkBelow", p.ShrinkBelow}, {"TrackingRate", p.TrackingRate},
		{"FastTrackingRate", p.FastTrackingRate}, {"TrackingFraction", p.TrackingFraction}} {
		if math.IsNaN(f.value) || math.IsInf(f.value, 0) {
			return fmt.Errorf("Policy.%s is %g: it must be a finite number (a NaN would silently turn its rule off)", f.name, f.value)
		}
	}
	switch {
	case p.ExplodeFactor != 0 && p.ExplodeFactor <= 1:
		return fmt.Errorf("Policy.ExplodeFactor %g would skip ordinary steps: use a factor above 1 (e.g. %g), or 0 to turn the explosion guard off", p.ExplodeFactor, DefaultExplodeFactor)
	case p.CheckEvery < 0:
		return fmt.Errorf("CheckEvery(%d) is negative (0 disables drift checks)", p.CheckEvery)
	case !(p.TrackingFraction > 0 && p.TrackingFraction <= 1):
		return fmt.Errorf("Policy.TrackingFraction %g is outside (0, 1] (e.g. %g: that share of the batch's rows moves the bases)", p.TrackingFraction, DefaultTrackingFraction)
	case !(p.TrackingRate >= 0 && p.FastTrackingRate >= p.TrackingRate && p.FastTrackingRate <= MaxTrackingRate):
		return fmt.Errorf("Policy.TrackingRate %g and FastTrackingRate %g must satisfy 0 ≤ TrackingRate ≤ FastTrackingRate ≤ %g (e.g. %g and %g)",
			p.TrackingRate, p.FastTrackingRate, float64(MaxTrackingRate), DefaultTrackingRate, DefaultFastTrackingRate)
	case p.ResidualThreshold <= 0 || p.ResidualThreshold > 1:
		return fmt.Errorf("ResidualThreshold(%g) is outside (0, 1] (1 disables the residual trigger)", p.ResidualThreshold)
	case p.DriftMargin < 0 || p.DriftMargin >= 1:
		return fmt.Errorf("Policy.DriftMargin %g is outside [0, 1) (e.g. 0.15; 0 makes the residual rule a plain threshold)", p.DriftMargin)
	case p.LossPatience < 0:
		return fmt.Errorf("LossPatience(%d) is negative (0 disables the loss trigger)", p.LossPatience)
	case p.CurvatureFactor < 0:
		return fmt.Errorf("Policy.CurvatureFactor %g is negative (0 disables the curvature trigger; e.g. 10)", p.CurvatureFactor)
	case p.FullUpdateEvery < 0:
		return fmt.Errorf("Policy.FullUpdateEvery %d is negative (0 disables rotating full updates)", p.FullUpdateEvery)
	case p.MinRank < 0 || p.MaxRank < 0:
		return fmt.Errorf("Policy.MinRank %d / MaxRank %d: rank bounds cannot be negative (0 leaves the rank fixed)", p.MinRank, p.MaxRank)
	case p.MaxRank > 0 && p.MinRank > p.MaxRank:
		return fmt.Errorf("Policy.MinRank %d is above MaxRank %d", p.MinRank, p.MaxRank)
	case p.Adaptive(rank) && (p.GrowAbove <= p.ShrinkBelow || p.GrowAbove > 1 || p.ShrinkBelow < 0):
		return fmt.Errorf("Policy.GrowAbove %g and ShrinkBelow %g must satisfy 0 ≤ ShrinkBelow < GrowAbove ≤ 1 (e.g. 0.6 and 0.2)", p.GrowAbove, p.ShrinkBelow)
	case p.Adaptive(rank) && p.RankPatience < 1:
		return fmt.Errorf("Policy.RankPatience %d must be ≥ 1 when the rank adapts (MinRank %d, MaxRank %d)", p.RankPatience, p.MinRank, p.MaxRank)
	}
	return nil
}

// Adaptive says whether the rank rule can change a rank configured at rank.
func (p Policy) Adaptive(rank int) bool {
	return p.MaxRank > rank || (p.MinRank > 0 && p.MinRank < rank)
}

// NextRank applies the rank rule to a variable at rank r whose residual was above GrowAbove for
// the last high checks and below ShrinkBelow for the last low checks. limit caps the rank (the
// variable's smaller side). It returns the new rank (r if unchanged) and the reason.
func (p Policy) NextRank(r, high, low, limit int) (int, string) {
	if p.RankPatience < 1 {
		return r, ""
	}
	if maxRank := min(p.MaxRank, limit); high >= p.RankPatience && r < maxRank {
		return min(2*r, maxRank), fmt.Sprintf("residual above %g for %d checks", p.GrowAbove, high)
	}
	if p.MinRank > 0 && low >= p.RankPatience && r > p.MinRank {
		return max(r/2, p.MinRank), fmt.Sprintf("residual below %g for %d checks", p.ShrinkBelow, low)
	}
	return r, ""
}
