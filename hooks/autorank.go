package hooks

import (
	"fmt"
	"math"

	"github.com/gradsub/gradsub/projector"
)

// The automatic rank: without Rank, each matrix keeps a share of its smaller side, so that the
// one option scales with the model (a fixed default of 4 is 1/64 of a 256-wide matrix), and never
// fewer than MinAutoRank directions: the one option must keep the model's quality, and it gives
// the work back (leaves the matrix out) where a rank that keeps it would not save any.
const (
	// DefaultRankShare: the share of a matrix's smaller side AutoRank keeps. Measured on the
	// transformer example (1,000 steps, width 256): rank 48 (this share) kept the eval loss
	// within 1% of AdamW's at 0.81 of its step time; an eighth cost 4%, a thirty-second 11%.
	DefaultRankShare = 3.0 / 16
	// MinAutoRank: the automatic rank never goes below this. Below 32 directions every model
	// measured lost quality beyond 5% of stock's eval loss (docs/quality.md: the attention LM at
	// rank 8, 12 and 16: 1.71×, 1.57×, 1.46×; the MLP at 6–16: 1.45–1.81×; the transformer at
	// 8: +11.8%), at 32 the transformer held within 4%. A matrix whose smaller side is ≤ 32, or
	// whose product has too few rows per step for 32 directions to cost less than its ∂W, is
	// left out: it trains as stock, and the plan says why.
	MinAutoRank = 32
	// AutoRankWorkShare: the automatic rank keeps the projector's work on a weight at most this
	// share of the ∂W it replaces, so that a default never costs more than stock. 0.75 keeps the
	// transformer example's 48.
	AutoRankWorkShare = 0.75
)

// AutoRank is the rank a matrix [m, n] takes when Rank is not set: DefaultRankShare of its
// smaller side, at least MinAutoRank, rounded to a multiple of 4 (the Go backend's product
// tile); 0 (leave it out) where that is not below the smaller side.
//
// rows is its product's rows per step (the batch, times positions for a sequence or an image;
// 0 when unknown). Given it, the rank is lowered until the projector's own work on the weight
// (ProjectorWork) is at most AutoRankWorkShare of the ∂W it replaces (rows·m·n multiply-adds),
// and is 0 when even MinAutoRank costs more: the lift alone is r·m·n, so a product of fewer than
// about 43 rows per step never pays for 32 directions, and the basis's orthonormalisation grows
// as r²·side, not with the batch (a 1024-wide MLP at batch 256 and a fixed share, rank 192: 2.4
// times stock's step).
func AutoRank(m, n, rows int) int {
	side := min(m, n)
	r := max(shareRank(side), MinAutoRank)
	if r >= side {
		return 0
	}
	budget := int64(AutoRankWorkShare * float64(rows) * float64(m) * float64(n))
	if rows <= 0 || ProjectorWork(m, n, rows, r) <= budget {
		return r
	}
	for r > MinAutoRank && ProjectorWork(m, n, rows, r) > budget {
		r -= 4 // down by the tile: the cap must still hold
	}
	if ProjectorWork(m, n, rows, r) > budget {
		return 0
	}
	return r
}

// shareRank is DefaultRankShare of a matrix's smaller side, at least 1 and below the side,
// rounded to a multiple of 4 from 8 up: the rank of a matrix the user named (Variables,
// Matching, Select) without a Rank, projected whatever it costs.
func shareRank(side int) int {
	r := int(math.Round(DefaultRankShare * float64(side)))
	if r >= 8 {
		r = 4 * int(math.Round(float64(r)/4))
	}
	return max(1, min(r, side-1))
}

// ProjectorWork estimates the multiply-adds the matrix subspace spends per step on a weight
// [m, n] at rank r on the direct path, for a product of the given rows, with the default policy:
// the coefficient (rows·r·(m+n)), the tracking products on the tracked rows, the lift of the
// step (r·m·n), the basis's Newton–Schulz orthonormalisation, rotation and check (r²·side each,
// the first twice per iteration) and the rotation of two moments (r²·other side each).
func ProjectorWork(m, n, rows, r int) int64 {
	side, other := int64(min(m, n)), int64(max(m, n))
	tracked := int64(min(rows, max(int(math.Ceil(DefaultTrackingFraction*float64(rows))), MinTrackingRows)))
	rr := int64(r)
	s := int64(projector.SketchColumns(r))
	coef := int64(rows) * rr * int64(m+n)
	track := tracked * (rr + s) * int64(m+n)
	iterations := int64(len(projector.NewtonSchulzSchedule(1 / (1 + DefaultFastTrackingRate))))
	basis := (2*iterations+2)*rr*rr*side + 4*rr*rr*other
	lift := rr * int64(m) * int64(n)
	return coef + track + basis + lift
}

// rankOf is the configured rank of a matrix [m, n] whose product has rows rows per step (0:
// unknown): Rank's, or AutoRank's (0: too costly to project), brought within the rank rule's
// bounds where they are set (a user who bounds the rank expects it there).
func (c *Config) rankOf(m, n, rows int) int {
	if c.rank > 0 {
		return c.rank
	}
	r := AutoRank(m, n, rows)
	if c.policy.MaxRank > 0 {
		r = min(r, c.policy.MaxRank)
	}
	if r == 0 {
		return c.policy.MinRank
	}
	return max(r, c.policy.MinRank)
}

// temporalRank is the temporal subspace's k: Rank's, or DefaultRank.
func (c *Config) temporalRank() int {
	if c.rank > 0 {
		return c.rank
	}
	return DefaultRank
}

// rankDesc describes the configured rank for messages: "Rank(8)" or "the automatic rank".
func (c *Config) rankDesc() string {
	if c.rank > 0 {
		return fmt.Sprintf("Rank(%d)", c.rank)
	}
	if c.mode == Temporal {
		return fmt.Sprintf("the default rank (%d)", DefaultRank)
	}
	return fmt.Sprintf("the automatic rank (%g%% of each matrix's smaller side)", 100*DefaultRankShare)
}
