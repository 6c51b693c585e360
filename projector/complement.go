package projector

import (
	. "github.com/gomlx/gomlx/core/graph"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	"github.com/gradsub/gradsub/internal/upstream"
)

// The complement: a fresh random subspace each step for what the basis misses.
//
// A basis of r directions trains a weight only inside its span; at a small share of the side the
// rest of the weight, its part outside the span included, moves only as fast as the basis turns.
// Each step, s random directions Ω outside the basis (on the basis's side) take a state-free
// step too: their coefficient D = Ωᵀ·∂W (Left; ∂W·Ω on the Right) is computed in the same
// skinny product as the basis's coefficient, ([Q | Ω] in place of Q: B·s·(m+n) more
// multiply-adds, never ∂W), normalised to unit RMS, and lifted in the same product as the base
// optimizer's step. Over steps the random directions cover the whole side, so every part of
// the weight trains; a direction's expected step is the gradient's projection on it, so it
// descends on average (GoLore, He et al. 2025: random subspaces converge where GaLore's
// dominant ones can stall; FRUGAL, Zmushko et al. 2025: state-free steps for the rest of the
// space keep quality at a fraction of the optimizer state).
//
// The step's length is tied to the base optimizer's step on the basis's coefficient
// (ComplementStep), so the learning rate, its schedule and the base optimizer's normalisation
// come with it, and a skipped step (a zero coefficient step) skips the complement too.

// ComplementSeed is the random state that draws a step's complement directions: a function of
// the variable (seed, e.g. a hash of its path) and the step number t (a scalar integer node), so
// that every step draws new directions, a resumed run draws the same ones as an uninterrupted
// run, and no state is stored.
func ComplementSeed(t *Node, seed uint64) *Node { return ComplementSeedAt(SeedStep(t), seed) }

// SeedStep is the step number t as ComplementSeedAt reads it ([1] uint64): made once a step and
// shared by every variable's seed.
func SeedStep(t *Node) *Node { return Reshape(ConvertDType(t, dtypes.Uint64), 1) }

// ComplementSeedAt is ComplementSeed from the step as SeedStep makes it.
func ComplementSeedAt(step *Node, seed uint64) *Node {
	g := step.Graph()
	return Concatenate([]*Node{Const(g, []uint64{seed}), step, Const(g, []uint64{0x9e3779b97f4a7c15})}, 0)
}

// ComplementDirections draws s random unit directions on the basis's side outside the span of
// basis ([rows, r], or a stack [g, rows, r]): uniform noise with the basis's part removed, each
// column scaled to unit length. They are independent random directions, not an orthonormal set
// (nearly orthogonal when s ≪ rows); the step needs only that each lies outside the basis and
// that together they are isotropic in the rest of the side. rngState is ComplementSeed's.
func ComplementDirections(rngState, basis *Node, s int) *Node {
	dims := append([]int(nil), basis.Shape().Dimensions...)
	dims[len(dims)-1] = s
	return ComplementFromNoise(basis, ComplementNoise(rngState, shapes.Make(basis.DType(), dims...)))
}

// ComplementNoise is ComplementDirections' draw: uniform noise in [−½, ½) of the given shape.
func ComplementNoise(rngState *Node, shape shapes.Shape) *Node {
	_, noise := RandomUniform(rngState, shape)
	return AddScalar(noise, -0.5)
}

// ComplementFromNoise is ComplementDirections from its draw (ComplementNoise): noise ([rows, s],
// or a stack [g, rows, s] for a stack of bases) with its part in each basis's span removed, each
// column scaled to unit length.
func ComplementFromNoise(basis, noise *Node) *Node {
	q, unstack := stacked(basis)
	n, _ := stacked(noise)
	outside := Sub(n, timesStack(q, transposedTimesStack(q, n)))
	length := Sqrt(ReduceAndKeep(Square(outside), ReduceSum, 1)) // [g, 1, s]
	return unstack(Div(outside, SafeDivisor(length)))
}

// ComplementGrowth is the most the complement's step may lengthen from one step to the next
// (LimitGrowth): the norm-growth limiter of Fira (Chen et al. 2024), which found that a step
// scaled from the base optimizer's spikes with it.
const ComplementGrowth = 1.01

// LimitGrowth shortens step so that its length is at most ComplementGrowth times the last step's
// (last: a scalar, 0 before the first step, when any length goes) and returns it with the length
// to remember: the step's own, or the last one where the step is zero (a skipped step, which
// must not lift the limit).
func LimitGrowth(step, last *Node) (limited, length *Node) {
	n := Sqrt(ReduceAllSum(Square(step)))
	last = ConvertDType(last, n.DType())
	bound := MulScalar(last, ComplementGrowth)
	over := LogicalAnd(upstream.Positive(last), GreaterThan(n, bound))
	factor := Where(over, Div(bound, SafeDivisor(n)), upstream.OneOf(n))
	limited = Mul(step, factor)
	length = Where(upstream.Positive(n), Mul(n, factor), last)
	return limited, length
}

// ComplementStep is the complement's step from its coefficient gradient compCoef (D: [s, n]
// Left, [m, s] Right), the basis's coefficient gradient coef (C) and the base optimizer's step
// on it (already scaled and guarded), in the base optimizer's manner:
//   - normalized (Adam, AdamW, RMSProp: a step whose length does not follow the gradient's):
//     −scale·RMS(step)·D/RMS(D), each random direction moving scale times as far as the tracked
//     ones do on average;
//   - otherwise (SGD: a step proportional to the gradient): −scale·(RMS(step)/RMS(C))·D, the
//     base optimizer's gain on the coefficient applied to the complement's gradient.
//
// It is zero where D is zero or not finite, and where the base step is zero (a skipped step).
//
// It is ComplementSteps for one matrix, with no growth limit (a last length of 0).
func ComplementStep(compCoef, coef, baseStep *Node, scale float64, normalized bool) *Node {
	noLimit := Zeros(baseStep.Graph(), shapes.Make(baseStep.DType(), 1))
	steps, _ := ComplementSteps([]*Node{compCoef}, []*Node{coef}, []*Node{baseStep}, []float64{scale}, normalized, noLimit)
	return steps[0]
}

// ComplementSteps is ComplementStep followed by LimitGrowth for a group of k matrices, with the
// per-matrix scalars computed as vectors over the group and the steps as one joined tensor: a
// few ops a group instead of some thirty a matrix. compCoefs, coefs and baseSteps each hold
// tensors of one shape; scales are the matrices' ComplementStep scales and lasts ([k]) their
// last lengths (LimitGrowth's last). It returns each matrix's limited step and the lengths to
// remember ([k], in lasts' dtype). The step's length is taken as |factor|·‖D‖, the length of
// factor·D without a pass over it.
func ComplementSteps(compCoefs, coefs, baseSteps []*Node, scales []float64, normalized bool, lasts *Node) (steps []*Node, lengths *Node) {
	k, dt := len(compCoefs), baseSteps[0].DType()
	g := lasts.Graph()
	rows := func(xs []*Node) *Node { // [k, size] in the base step's dtype
		x := xs[0]
		if k > 1 {
			x = Concatenate(xs, 0)
		}
		return Reshape(ConvertDType(x, dt), k, xs[0].Shape().Size())
	}
	sumSquares := func(x *Node) *Node { return DotGeneral(x, []int{1}, []int{0}, x, []int{1}, []int{0}) }
	rms := func(sq *Node, size int) *Node { return Sqrt(DivScalar(sq, float64(size))) }
	d := rows(compCoefs)
	dSquares := sumSquares(d)
	gain := rms(sumSquares(rows(baseSteps)), baseSteps[0].Shape().Size())
	if normalized {
		gain = Div(gain, SafeDivisor(rms(dSquares, compCoefs[0].Shape().Size())))
	} else {
		gain = Div(gain, SafeDivisor(rms(sumSquares(rows(coefs)), coefs[0].Shape().Size())))
	}
	negScales := make([]float64, k)
	for i, s := range scales {
		negScales[i] = -s
	}
	factor := Mul(gain, ConstAsDType(g, dt, negScales))
	ok := IsFinite(Mul(factor, ReduceSum(d, 1)))
	factor = Where(ok, factor, upstream.ZeroOf(factor))
	n := Where(ok, Mul(Abs(factor), Sqrt(dSquares)), upstream.ZeroOf(factor))

	last := ConvertDType(lasts, dt)
	bound := MulScalar(last, ComplementGrowth)
	over := LogicalAnd(upstream.Positive(last), GreaterThan(n, bound))
	limit := Where(over, Div(bound, SafeDivisor(n)), upstream.OneOf(n))
	lengths = ConvertDType(Where(upstream.Positive(n), Mul(n, limit), last), lasts.DType())

	// factor is 0 where not ok; a non-finite D's NaN·0 is zeroed after.
	joined := ZeroNonFinite(Mul(d, Reshape(Mul(factor, limit), k, 1)))
	shape := compCoefs[0].Shape().Dimensions
	if k == 1 {
		return []*Node{Reshape(joined, shape...)}, lengths
	}
	// One reshape to the matrices' rows one after another, then a window each.
	byRows := Reshape(joined, append([]int{k * shape[0]}, shape[1:]...)...)
	steps = make([]*Node, k)
	for i := range steps {
		steps[i] = SliceAlong(byRows, 0, i*shape[0], (i+1)*shape[0])
	}
	return steps, lengths
}
