package hooks

import (
	"fmt"
	"math"

	"github.com/gradsub/gradsub/projector"
)

// The automatic rank: without Rank, each matrix keeps a share of its smaller side, so that the
// one option scales with the model (a fixed default of 4 is 1/64 of a 256-wide matrix), and never
// fewer than MinAutoRank directions: the one option must keep the model's quality, so it leaves
// a matrix out where that rank would not pay for itself (AutoRankWorkShare).
const (
	// DefaultRankShare: the share of a matrix's smaller side AutoRank keeps. Measured on the
	// transformer example (1,000 steps, width 256): rank 48 (this share) kept the eval loss
	// within 1% of AdamW's at 0.81 of its step time; an eighth cost 4%, a thirty-second 11%.
	DefaultRankShare = 3.0 / 16
	// MinAutoRank: the automatic rank never goes below this. Below 32 directions every model
	// measured lost quality beyond 5% of stock's eval loss (docs/quality.md: the attention LM at
	// rank 8, 12 and 16: 1.71×, 1.57×, 1.46×; the MLP at 6–16: 1.45–1.81×; the transformer at
	// 8: +11.8%), at 32 the transformer held within 4%. A matrix whose smaller side is ≤ 32 is
	// left out: it trains as stock, and the plan says why.
	MinAutoRank = 32
	// AutoRankWorkShare: the automatic rank projects a weight only where the projector's work on
	// it (its FLOPs, ProjectorWork) is at most this share of the FLOPs of the ∂W it replaces: the
	// projector's products are rank-wide and slower per FLOP than ∂W's, so a share near 1 costs
	// time. Timed against stock in turns (docs/benchmarks.md): the transformer example's 256×256
	// projections at rank 48 (a share of 0.66) are part of a step that takes 0.81 of AdamW's;
	// 1024-wide layers at ranks 68 and 44 (0.71–0.72) stepped in 1.08–1.21 of stock's time.
	AutoRankWorkShare = 0.7
)

// The complement's defaults (Config.Complement, ComplementScale): measured on the transformer
// example and the quality suite (docs/quality.md).
const (
	// AutoComplement is Complement's default: each matrix takes ComplementOf's number.
	AutoComplement = -1
	// DefaultComplementScale: each complement direction moves this many times as far as the
	// tracked directions do on average.
	DefaultComplementScale = 4.0
)

// ComplementOf is the automatic number of complement directions of a matrix projected at rank
// on a side of sideRows rows: as many as the basis has, within the side's directions outside it.
func ComplementOf(sideRows, rank int) int { return max(0, min(2*rank, sideRows-rank)) }

// AutoRank is the rank a matrix [m, n] takes when Rank is not set: DefaultRankShare of its
// smaller side, at least MinAutoRank, rounded to a multiple of 4 (the Go backend's product
// tile); 0 (leave it out) where that is not below the smaller side.
//
// rows is its product's rows per step (the batch, times positions for a sequence or an image;
// 0 when unknown). Given it, the matrix is also left out (0) where the projector's own work on it
// (ProjectorWork) would exceed AutoRankWorkShare of the ∂W it replaces (rows·m·n multiply-adds).
// The rank is not lowered to fit: every rank below the share measured cost quality (the
// transformer's MLP projections at 36 instead of 48: +7% eval loss over 1,000 steps), so a matrix
// whose share does not pay trains as stock. The lift alone is r·m·n, and the basis's
// orthonormalisation grows as r²·side whatever the batch: wide layers at small batches are left
// out (a 1024-wide MLP at batch 256 and rank 192: 2.4 times stock's step).
func AutoRank(m, n, rows int) int {
	side := min(m, n)
	r := max(shareRank(side), MinAutoRank)
	if r >= side {
		return 0
	}
	if rows > 0 && float64(ProjectorWork(m, n, rows, r)) > AutoRankWorkShare*float64(rows)*float64(m)*float64(n) {
		return 0 // not lowered to fit: lower ranks cost quality; the matrix trains as stock
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
// step (r·m·n), the basis's Newton–Schulz orthonormalisation (its Gram and final product, r²·side
// each, and three r×r products per iteration after the first), rotation and check (r²·side
// each) and the rotation of two moments (r²·other side each).
func ProjectorWork(m, n, rows, r int) int64 {
	side, other := int64(min(m, n)), int64(max(m, n))
	tracked := int64(min(rows, max(int(math.Ceil(DefaultTrackingFraction*float64(rows))), MinTrackingRows)))
	rr := int64(r)
	s := int64(projector.SketchColumns(r))
	coef := int64(rows) * rr * int64(m+n)
	track := tracked * (rr + s) * int64(m+n)
	iterations := int64(len(projector.NewtonSchulzSchedule(1 / (1 + DefaultFastTrackingRate))))
	basis := 4*rr*rr*side + 3*(iterations-1)*rr*rr*rr + 4*rr*rr*other
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
	return fmt.Sprintf("the automatic rank (3/16 of each matrix's smaller side, at least %d, where it pays)", MinAutoRank)
}
