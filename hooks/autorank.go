package hooks

import (
	"fmt"
	"math"

	"github.com/gradsub/gradsub/projector"
)

// The automatic rank: without Rank, each matrix keeps a share of its smaller side, so that the
// one option scales with the model (a fixed default of 4 is 1/64 of a 256-wide matrix), and never
// fewer than a least rank: the one option must keep the model's quality, so it leaves a matrix
// out where that rank would not pay for itself (AutoRankWorkShare).
const (
	// DefaultRankShare: the share of a matrix's smaller side AutoRank keeps, with the complement
	// on (the default), above MinAutoRank. The transformer example at AdamW's learning rate kept
	// AdamW's eval loss at rank 16 whatever its width: 0.98 at width 256 (1,000 steps), 0.97 at
	// 512 and 0.96 at 1,024 (300 steps), where width/16 (32 and 64) gave the same (0.97, 0.96)
	// at 0.73 and 0.78 of AdamW's gradient FLOPs against 0.63 and 0.58 (docs/benchmarks.md). A
	// share of 1/16 kept the projector's cost a constant share of ∂W; at 1/64 the saving grows
	// with the model. The wide attention LM (256) took 16 too: 0.99 of stock's.
	DefaultRankShare = 1.0 / 64
	// NamedRankShare: the share of its smaller side a matrix the user named (Variables,
	// Matching, Select) without a Rank takes, whatever it costs.
	NamedRankShare = 1.0 / 16
	// MinAutoRank: with the complement, the automatic rank never goes below this (the attention
	// LM at 8 of 64 kept 1.12× stock's eval loss, not 5%). A matrix whose smaller side is ≤ it is
	// left out: it trains as stock, and the plan says why.
	MinAutoRank = 16
	// PlainRankShare and PlainMinAutoRank are the share and least rank without the complement
	// (Complement(0), or SGD): below 32 directions every model measured lost quality beyond 5% of
	// stock's eval loss (the attention LM at 8, 12 and 16: 1.71×, 1.57×, 1.46×; the transformer
	// at 8: +11.8%), and 3/16 of the transformer's side kept it within 1% of AdamW's.
	PlainRankShare   = 3.0 / 16
	PlainMinAutoRank = 32
	// AutoRankWorkShare: the automatic rank projects a weight only where the projector's work on
	// it (its FLOPs, ProjectorWork) is at most this share of the FLOPs of the ∂W it replaces: the
	// projector's products are rank-wide and slower per FLOP than ∂W's, so a share near 1 costs
	// time. Timed against stock in turns (docs/benchmarks.md): the transformer example's 256×256
	// projections at rank 48 (a share of 0.66) are part of a step that takes 0.81 of AdamW's;
	// 1024-wide layers at ranks 68 and 44 (0.71–0.72) stepped in 1.08–1.21 of stock's time.
	AutoRankWorkShare = 0.7
	// AutoRankLiftShare: the automatic rank also leaves out a matrix whose lift, (r+s)·m·n, the
	// part of the projector's work that does not shrink with the batch, would exceed this share
	// of the ∂W it replaces (rows·m·n), that is r+s > AutoRankLiftShare·rows. Such a step is mostly
	// the lift and saves little time, and at few rows per step the one option measured a quality
	// cost: the quality suite's wide MLP (512×512 at 128 rows, 16 + 32 directions, a work share of
	// 0.65) stepped in 0.90 of stock's time at 1.05× its eval loss over 10 seeds; at 2,048 rows it
	// keeps stock's loss (1.00×, 5 seeds).
	AutoRankLiftShare = 0.25
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

// AutoRank is the rank a matrix [m, n] takes when Rank is not set, in the default configuration
// (the complement on): DefaultRankShare of its smaller side, at least MinAutoRank, rounded to a
// multiple of 4 (the Go backend's product tile); 0 (leave it out) where that is not below the
// smaller side.
//
// rows is its product's rows per step (the batch, times positions for a sequence or an image;
// 0 when unknown). Given it, the matrix is also left out (0) where the projector's own work on it
// (ProjectorWork, the complement's included) would exceed AutoRankWorkShare of the ∂W it
// replaces (rows·m·n multiply-adds), or its lift alone AutoRankLiftShare of it. The rank is not
// lowered to fit: lower ranks cost quality, so a matrix whose share does not pay trains as stock.
// The lift is (r+s)·m·n, and the basis's orthonormalisation grows as r²·side whatever the batch:
// wide layers at small batches are left out.
func AutoRank(m, n, rows int) int { return autoRank(m, n, rows, true) }

// PlainAutoRank is AutoRank without the complement (Complement(0), or an SGD base):
// PlainRankShare of the smaller side, at least PlainMinAutoRank, within the same cost cap.
func PlainAutoRank(m, n, rows int) int { return autoRank(m, n, rows, false) }

func autoRank(m, n, rows int, complement bool) int {
	directions := func(side, r int) int { return 0 }
	if complement {
		directions = ComplementOf
	}
	r, _, _ := autoRankWith(m, n, rows, complement, directions)
	return r
}

// leftOut is why the automatic rank leaves a matrix out (0: it does not).
type leftOut int

const (
	keptByAutoRank leftOut = iota
	sideTooSmall           // the least rank would not shrink the matrix
	liftCapped             // the lift alone would exceed AutoRankLiftShare of ∂W
	workCapped             // the projector's work would exceed AutoRankWorkShare of ∂W
)

// autoRankWith is the automatic rank with or without the complement, whose number of directions
// at a rank directions gives (for the cost caps). Where it leaves the matrix out (0), why says
// why and share is the rank it would have had. The rank is not lowered to fit: lower ranks cost
// quality, so the matrix trains as stock.
func autoRankWith(m, n, rows int, complement bool, directions func(side, r int) int) (rank int, why leftOut, share int) {
	side := min(m, n)
	s, least := autoShare(complement)
	r := max(shareRank(side, s), least)
	switch {
	case r >= side:
		return 0, sideTooSmall, r
	case liftTooLarge(rows, r, directions(side, r)):
		return 0, liftCapped, r
	case rows > 0 && float64(projectorWork(m, n, rows, r, directions(side, r))) > AutoRankWorkShare*float64(rows)*float64(m)*float64(n):
		return 0, workCapped, r
	}
	return r, keptByAutoRank, r
}

// liftTooLarge says whether the lift of r + s directions would exceed AutoRankLiftShare of the
// ∂W of a product of rows rows per step (0: unknown, never too large).
func liftTooLarge(rows, r, s int) bool {
	return rows > 0 && float64(r+s) > AutoRankLiftShare*float64(rows)
}

// autoShare is the automatic rank's share and least rank, with the complement or without.
func autoShare(complement bool) (share float64, least int) {
	if complement {
		return DefaultRankShare, MinAutoRank
	}
	return PlainRankShare, PlainMinAutoRank
}

// shareRank is share of a matrix's smaller side, at least 1 and below the side, rounded to a
// multiple of 4 from 8 up: the rank of a matrix the user named (Variables, Matching, Select)
// without a Rank, projected whatever it costs.
func shareRank(side int, share float64) int {
	r := int(math.Round(share * float64(side)))
	if r >= 8 {
		r = 4 * int(math.Round(float64(r)/4))
	}
	return max(1, min(r, side-1))
}

// ProjectorWork estimates the multiply-adds the matrix subspace spends per step on a weight
// [m, n] at rank r on the direct path, for a product of the given rows, with the default policy
// and the default complement (ComplementOf's directions): the coefficient of the basis and the
// complement (rows·(r+s)·(m+n)), the tracking products on the tracked rows, the lift of the step
// ((r+s)·m·n), the complement's directions drawn outside the basis (2·r·s·side), the basis's
// Newton–Schulz orthonormalisation (its Gram and final product, r²·side each, and three r×r
// products per iteration after the first), rotation and check (r²·side each) and the rotation
// of two moments (r²·other side each).
func ProjectorWork(m, n, rows, r int) int64 {
	return projectorWork(m, n, rows, r, ComplementOf(min(m, n), r))
}

func projectorWork(m, n, rows, r, s int) int64 {
	side, other := int64(min(m, n)), int64(max(m, n))
	tracked := int64(min(rows, max(int(math.Ceil(DefaultTrackingFraction*float64(rows))), MinTrackingRows)))
	rr, ss := int64(r), int64(s)
	sketch := int64(projector.SketchColumns(r))
	coef := int64(rows) * (rr + ss) * int64(m+n)
	track := tracked * (rr + sketch) * int64(m+n)
	iterations := int64(len(projector.NewtonSchulzSchedule(1 / (1 + DefaultFastTrackingRate))))
	basis := 4*rr*rr*side + 3*(iterations-1)*rr*rr*rr + 4*rr*rr*other
	complement := 2 * rr * ss * side
	lift := (rr + ss) * int64(m) * int64(n)
	return coef + track + basis + complement + lift
}

// rankOf is the configured rank of a matrix [m, n] whose product has rows rows per step (0:
// unknown): Rank's, or AutoRank's (0: too costly to project), brought within the rank rule's
// bounds where they are set (a user who bounds the rank expects it there).
func (c *Config) rankOf(m, n, rows int) int {
	if c.rank > 0 {
		return c.rank
	}
	r := c.autoRank(m, n, rows)
	if c.policy.MaxRank > 0 {
		r = min(r, c.policy.MaxRank)
	}
	if r == 0 {
		return c.policy.MinRank
	}
	return max(r, c.policy.MinRank)
}

// autoRank is the automatic rank of a matrix [m, n] under this configuration: AutoRank's rule
// with the complement on, PlainAutoRank's without it, and the cost cap at the configured number
// of complement directions.
func (c *Config) autoRank(m, n, rows int) int {
	r, _, _ := c.autoRankWhy(m, n, rows)
	return r
}

// autoRankWhy is autoRank with why it leaves a matrix out, and the rank it would have had.
func (c *Config) autoRankWhy(m, n, rows int) (rank int, why leftOut, share int) {
	return autoRankWith(m, n, rows, c.complementOf(min(m, n), 1) > 0, c.complementOf)
}

// namedRank is the rank of a matrix the user named without a Rank: NamedRankShare of its side
// (PlainRankShare without the complement) alone, whatever it costs.
func (c *Config) namedRank(side int) int {
	if c.complementOf(side, 1) > 0 {
		return shareRank(side, NamedRankShare)
	}
	return shareRank(side, PlainRankShare)
}

// leastAutoRank is the automatic rank's least under this configuration.
func (c *Config) leastAutoRank(side int) int {
	_, least := autoShare(c.complementOf(side, 1) > 0)
	return least
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
	if c.complementOf(1<<20, 1) > 0 {
		return fmt.Sprintf("the automatic rank (1/64 of each matrix's smaller side, at least %d, and twice as many complement directions, where it pays)", MinAutoRank)
	}
	return fmt.Sprintf("the automatic rank (3/16 of each matrix's smaller side, at least %d, where it pays)", PlainMinAutoRank)
}
