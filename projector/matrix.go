package projector

import (
	"fmt"
	"math/rand/v2"

	. "github.com/gomlx/gomlx/core/graph"
)

// Side says on which side of a weight matrix W ∈ R^{m×n} (used as y = x·W) the basis lives.
type Side int

const (
	// Left: Q ∈ R^{m×r} spans the column space of ∂W; the coefficient is Qᵀ·∂W ∈ R^{r×n},
	// computed directly as (x·Q)ᵀ·∂y.
	Left Side = iota
	// Right: Q ∈ R^{n×r} spans the row space of ∂W; the coefficient is ∂W·Q ∈ R^{m×r},
	// computed directly as xᵀ·(∂y·Q).
	Right
)

func (s Side) String() string {
	if s == Left {
		return "left"
	}
	return "right"
}

// SmallerSide returns the side of the smaller dimension of an m×n matrix (Left when m ≤ n): its
// basis is the cheaper to learn and to store.
func SmallerSide(m, n int) Side {
	if m <= n {
		return Left
	}
	return Right
}

// CheckMatrix validates a matrix-subspace request with an error that names the fix.
func CheckMatrix(m, n, rank int, side Side) error {
	dim := m
	if side == Right {
		dim = n
	}
	switch {
	case rank < 1:
		return fmt.Errorf("rank %d is impossible: a subspace needs at least 1 direction (use rank ≥ 1)", rank)
	case rank > dim:
		return fmt.Errorf("rank %d exceeds the %s side of the %d×%d weight (%d): lower the rank to ≤ %d", rank, side, m, n, dim, dim)
	}
	return nil
}

// Matrix is a matrix subspace learned in the graph.
type Matrix struct {
	Basis             *Node // Q: [m, r] (Left) or [n, r] (Right), orthonormal columns
	ExplainedVariance *Node // ‖Qᵀ∂W‖²/‖∂W‖² (Left) or ‖∂W·Q‖²/‖∂W‖² (Right), scalar
	Valid             *Node // false for a zero or non-finite gradient: Basis is then the previous one
}

// DefaultPowerIterations of LearnMatrix. With a warm start from the previous basis, two
// iterations track a slowly moving subspace; a cold start from a random sketch needs them too.
const DefaultPowerIterations = 2

// LearnMatrix learns an orthonormal basis of the dominant rank-r subspace of a gradient
// grad ([m, n]) on the given side, by randomized subspace iteration built from products only:
// Y = ∂W·Ω (Left) with Ω = ∂Wᵀ·Q_prev when a previous basis is given (a warm start: a refresh is
// a few power iterations, not a cold SVD) or a fixed Gaussian sketch otherwise, then
// Y ← orth(∂W·∂Wᵀ·Y) powerIterations times. Orthonormalisation is CGS2 (Orthonormalize).
//
// previous may be nil; prevValid (scalar bool, may be nil) says whether it holds a basis yet.
// A zero or non-finite gradient returns Valid = false and the previous basis (or zeros).
func LearnMatrix(grad *Node, rank int, side Side, previous, prevValid *Node, powerIterations int) Matrix {
	if grad.Rank() != 2 {
		panicf("LearnMatrix: want a gradient matrix [m, n], got shape %s", grad.Shape())
	}
	m, n := grad.Shape().Dim(0), grad.Shape().Dim(1)
	if err := CheckMatrix(m, n, rank, side); err != nil {
		panicf("LearnMatrix: %v", err)
	}
	g := grad.Graph()
	dtype := grad.DType()
	// Work on A = ∂W (Left) or ∂Wᵀ (Right): the basis spans A's column space.
	a := grad
	if side == Right {
		a = Transpose(grad, 0, 1)
	}
	cols := a.Shape().Dim(1)
	finite := LogicalAll(IsFinite(a))
	a = Where(finite, a, ZerosLike(a))
	// The subspace does not depend on scale: normalise to unit max-magnitude, so that the power
	// iterations (A·Aᵀ)^q neither underflow (a gradient of 1e-11) nor overflow float32.
	scale := ReduceAllMax(Abs(a))
	a = Div(a, Where(GreaterThan(scale, ZerosLike(scale)), scale, OnesLike(scale)))
	energy := ReduceAllSum(Square(a))
	valid := LogicalAnd(finite, GreaterThan(energy, ZerosLike(energy)))

	// Start: A·Aᵀ·Q_prev when warm, A·Ω (a fixed Gaussian Ω, seeded for reproducibility) when cold.
	omega := ConstAsDType(g, dtype, gaussianSketch(cols, rank))
	y := DotProduct(a, omega)
	if previous != nil {
		warm := DotProduct(a, TransposedTimes(a, previous))
		useWarm := prevValid
		if useWarm == nil {
			useWarm = Const(g, true)
		}
		// A warm start that lost rank (e.g. the gradient is orthogonal to Q_prev) falls back cold.
		warmNorms := ReduceSum(Square(warm), 0)
		fullRank := LogicalAll(GreaterThan(warmNorms, MulScalar(ReduceAllMax(warmNorms), 1e-12)))
		y = Where(LogicalAnd(useWarm, fullRank), warm, y)
	}
	y = Orthonormalize(y, 1e-7)
	for range powerIterations {
		y = Orthonormalize(DotProduct(a, TransposedTimes(a, y)), 1e-7)
	}

	kept := ReduceAllSum(Square(TransposedTimes(y, a)))
	safeEnergy := Where(valid, energy, OnesLike(energy))
	explained := Where(valid, Div(kept, safeEnergy), ZerosLike(energy))
	fallback := ZerosLike(y)
	if previous != nil {
		fallback = previous
	}
	basis := Where(valid, y, fallback)
	return Matrix{Basis: basis, ExplainedVariance: explained, Valid: valid}
}

// gaussianSketch is a fixed pseudo-random [n, r] matrix, the same for every graph: a cold start
// must be reproducible run after run.
func gaussianSketch(n, r int) [][]float64 {
	rng := rand.New(rand.NewPCG(uint64(n), uint64(r)))
	out := make([][]float64, n)
	for i := range out {
		out[i] = make([]float64, r)
		for j := range out[i] {
			out[i][j] = rng.NormFloat64()
		}
	}
	return out
}

// TransposedTimes is aᵀ·b for a matrix a [k, m] and a matrix b [k, n] or vector b [k] (k is
// usually the batch).
//
// The Go backend's product kernels want the left operand contracted on its last axis; given any
// other layout they first copy both operands into transposed form. A product contracting the
// first axes of both would therefore copy b too, which here is often a [batch, features]
// activation or gradient: in a transformer step those copies cost more than the products (rows of
// a power-of-two length are the slowest to transpose). So the operand transposed explicitly is
// the one that makes the smaller copy: a itself (k·m values), or b, with the small [n, m] result
// transposed back (k·n + n·m values). Either way the product then runs without copies.
//
// A vector b ([k]) needs no copy at all: aᵀ·b is b·a.
func TransposedTimes(a, b *Node) *Node {
	if b.Rank() == 1 {
		return DotProduct(b, a)
	}
	k, m, n := a.Shape().Dim(0), a.Shape().Dim(1), b.Shape().Dim(1)
	if k*m <= k*n+n*m {
		return DotProduct(Transpose(a, 0, 1), b)
	}
	return Transpose(DotProduct(Transpose(b, 0, 1), a), 0, 1)
}

// TimesTransposed is a·bᵀ for matrices a [m, k] and b [n, k], as one product.
func TimesTransposed(a, b *Node) *Node { return DotGeneral(a, []int{1}, nil, b, []int{1}, nil) }

// DirectCoefficients computes the projected gradient of W ([m, n]) in a product y = x·W without
// building ∂W = xᵀ·∂y: Left returns (x·Q)ᵀ·∂y ([r, n]), Right returns xᵀ·(∂y·Q) ([m, r]). x is
// [B, m] and dy is [B, n] (leading axes flattened into B): B·r·(m+n) multiply-adds instead of
// B·m·n.
func DirectCoefficients(x, dy, basis *Node, side Side) *Node {
	if side == Left {
		return TransposedTimes(DotProduct(x, basis), dy)
	}
	return TransposedTimes(x, DotProduct(dy, basis))
}

// ProjectMatrix returns the coefficients of a full gradient ([m, n]): Qᵀ·∂W (Left) or ∂W·Q (Right).
func ProjectMatrix(grad, basis *Node, side Side) *Node {
	if side == Left {
		return TransposedTimes(basis, grad)
	}
	return DotProduct(grad, basis)
}

// LiftMatrix maps coefficients back to the weight's space: Q·c (Left) or c·Qᵀ (Right), [m, n].
func LiftMatrix(basis, coefficients *Node, side Side) *Node {
	if side == Left {
		return DotProduct(basis, coefficients)
	}
	return TimesTransposed(coefficients, basis)
}

// MatrixResidual is ‖∂W − lift(project(∂W))‖/‖∂W‖ (0 for a zero gradient).
func MatrixResidual(grad, basis *Node, side Side) *Node {
	return RelativeLength(Sub(grad, LiftMatrix(basis, ProjectMatrix(grad, basis, side), side)), grad)
}
