package step

import (
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gradsub/gradsub/hooks/internal/rules"
)

// Settings is what the step reads of the optimizer's configuration (hooks.Config), resolved
// when the step graph is built.
type Settings struct {
	Base              optimizer.Interface // the wrapped optimizer: it steps the coefficients
	Mode              rules.Mode
	Policy            rules.Policy
	Rank              int // the configured rank; 0: automatic (the rank rule reads it)
	WarmUp            int
	TemporalRank      int     // temporal mode's k
	VarianceThreshold float64 // temporal mode's rank by explained variance; 0: TemporalRank
	Scale             float64 // temporal mode's step multiplier (matrix mode: ScaleOf)
	ScaleAdaptation   float64 // the step-length rule's rate; 0: off
	WeightDecay       float64 // decoupled weight decay of the projected weights
	BaseIsSGD         bool    // the base optimizer's step is proportional to the gradient

	// Per matrix, projected at rank on a side of sideRows rows: the lifted step's multiplier,
	// the number of complement directions, and the length of each one's step against the
	// tracked directions' average (s of them).
	ScaleOf          func(sideRows, rank int) float64
	ComplementOf     func(sideRows, rank int) int
	ComplementFactor func(sideRows, rank, s int) float64
}
