package projector

import (
	"fmt"
	"math/rand/v2"

	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gradsub/gradsub/internal/upstream"
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

// String is the side's name: "left" (the basis lives on W's rows: Qᵀ·∂W) or "right" (on its columns: ∂W·Q).
func (s Side) String() string {
	if s == Left {
		return "left"
	}
	return "right"
}

// Rows is the size of the side of an m×n matrix the basis lives on: the basis's rows.
func (s Side) Rows(m, n int) int {
	if s == Right {
		return n
	}
	return m
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
	dim := side.Rows(m, n)
	switch {
	case rank < 1:
		return fmt.Errorf("rank %d is impossible: a subspace needs at least 1 direction (use rank ≥ 1)", rank)
	case rank > dim:
		return fmt.Errorf("rank %d exceeds the %s side of the %d×%d weight (%d): lower the rank to ≤ %d", rank, side, m, n, dim, dim)
	}
	return nil
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
//
// The transposed operand becomes the product's rows; a small number of rows that is not a
// multiple of ProductTile is padded with zero rows (and the result sliced back): the Go
// backend's kernels work in tiles of 4 rows and a remainder made such products 4 to 30 times
// slower (rank 10 against rank 8 or 12; see docs/log/2026-12-benchmarks.md).
func TransposedTimes(a, b *Node) *Node {
	if b.Rank() == 1 {
		return DotProduct(b, a)
	}
	k, m, n := a.Shape().Dim(0), a.Shape().Dim(1), b.Shape().Dim(1)
	if k*m <= k*n+n*m {
		return tiledRowsTimes(Transpose(a, 0, 1), b)
	}
	return Transpose(tiledRowsTimes(Transpose(b, 0, 1), a), 0, 1)
}

// ProductTile is the row tile of the Go backend's small-product kernels (see TransposedTimes).
const ProductTile = 4

// tiledRowsTimes is lhs·rhs for a lhs of few rows, padded to a multiple of ProductTile rows.
func tiledRowsTimes(lhs, rhs *Node) *Node {
	rows := lhs.Shape().Dim(0)
	pad := (ProductTile - rows%ProductTile) % ProductTile
	if pad == 0 || rows > 64 {
		return DotProduct(lhs, rhs)
	}
	zeros := Zeros(lhs.Graph(), shapes.Make(lhs.DType(), pad, lhs.Shape().Dim(1)))
	return SliceAlong(DotProduct(Concatenate([]*Node{lhs, zeros}, 0), rhs), 0, 0, rows)
}

// TimesTransposed is a·bᵀ for matrices a [m, k] and b [n, k], as one product.
func TimesTransposed(a, b *Node) *Node { return DotGeneral(a, []int{1}, nil, b, []int{1}, nil) }

// TimesSmallTransposed is a·bᵀ for a matrix a [m, k] and a small matrix b [n, k] (n a rank or a
// few sketch columns), with b transposed explicitly (n·k values): a product contracting both
// operands on their last axis sends the Go backend to its slow "transposed" kernel when n is
// small (1.1 ms of a 3.8 ms 784-256-10 step for a lift; see docs/log/2026-12-benchmarks.md).
func TimesSmallTransposed(a, b *Node) *Node { return DotProduct(a, Transpose(b, 0, 1)) }

// DirectCoefficients computes the projected gradient of W ([m, n]) in a product y = x·W without
// building ∂W = xᵀ·∂y: Left returns (x·Q)ᵀ·∂y ([r, n]), Right returns xᵀ·(∂y·Q) ([m, r]). x is
// [B, m] and dy is [B, n] (leading axes flattened into B): B·r·(m+n) multiply-adds instead of
// B·m·n. It is DirectStep's coefficient, without the tracking products.
func DirectCoefficients(x, dy, basis *Node, side Side) *Node {
	coef, _ := directCoefficients(x, dy, basis, side, x.Shape().Dim(0), basis.Shape().Dim(1))
	return coef
}

// directCoefficients returns the coefficient of the whole batch's ∂W in basis (Left: Qᵀ∂W
// [c, n]; Right: ∂W·Q [m, c], for a basis of c columns) and that of its leading k rows' ∂W in
// the basis's first r columns (the tracked ones; the rest are the complement's) as rows, [r, n]
// or (∂W·Q)ᵀ [r, m], the form the tracking products read; both from one skinny product of the
// basis with z, the operand it meets: x on the Left, ∂y on the Right.
//
// Where the basis lives on W's smaller side (the default), z·Q is taken transposed, as Qᵀ·zᵀ
// ([c, B], one product contracting both operands' last axis; the head's rows are its leading
// columns): the Go backend then runs the coefficient without transposing the [B, c] product (a
// transpose of 178 µs for each of the transformer's [1024, 48]; a [1024, 256] layer's
// coefficient at rank 48 took 343 against 595 µs), and the head comes out as rows. On the larger
// side (Side set) Qᵀ·zᵀ reads the larger operand transposed, which was slower (1.03 against 0.93
// ms): z·Q is taken as it is.
func directCoefficients(x, dy, basis *Node, side Side, k, r int) (coef, headRows *Node) {
	return directCoefficientsWithHeads(x, dy, SliceAlong(x, 0, 0, k), SliceAlong(dy, 0, 0, k), basis, side, r)
}

// directCoefficientsWithHeads is directCoefficients with x's and dy's leading k rows given (the
// tracking products read them too: one slice each, not two).
func directCoefficientsWithHeads(x, dy, xHead, dyHead, basis *Node, side Side, r int) (coef, headRows *Node) {
	rows, c, k := x.Shape().Dim(0), basis.Shape().Dim(1), xHead.Shape().Dim(0)
	tracked := func(a *Node, axis int) *Node { return SliceAlong(a, axis, 0, r) } // a itself when r == c
	z, other, otherHead := x, dy, dyHead
	if side == Right {
		z, other, otherHead = dy, x, xHead
	}
	headOf := func(a *Node, axis int) *Node { return SliceAlong(a, axis, 0, k) } // a itself when k == rows
	if z.Shape().Dim(1) <= other.Shape().Dim(1) {
		basisT := upstream.TransposeTo(basis, 1, 0)               // one for every product that reads this span
		zq := DotGeneral(basisT, []int{1}, nil, z, []int{1}, nil) // (z·Q)ᵀ: [c, B]
		coef = tiledRowsTimes(zq, other)                          // Left: Qᵀ∂W; Right: (∂W·Q)ᵀ
		headRows = tracked(coef, 0)
		if k < rows {
			headRows = tiledRowsTimes(headOf(tracked(zq, 0), 1), otherHead)
		}
		if side == Right {
			coef = Transpose(coef, 0, 1)
		}
		return coef, headRows
	}
	zq := DotProduct(z, basis) // [B, c]
	product := func(zq, other *Node) *Node {
		if side == Left {
			return TransposedTimes(zq, other) // (x·Q)ᵀ·∂y
		}
		return TransposedTimes(other, zq) // xᵀ·(∂y·Q)
	}
	coef = product(zq, other)
	var head *Node
	if k < rows || r < c {
		head = product(headOf(tracked(zq, 1), 0), otherHead)
	} else {
		head = coef
	}
	if side == Right {
		return coef, Transpose(head, 0, 1)
	}
	return coef, head
}

// SplitComplement splits a coefficient in the basis [Q | Ω] (Left: [r+s, n]; Right: [m, r+s])
// into the basis's part and the complement directions' part.
func SplitComplement(coef *Node, side Side, r int) (basisPart, complementPart *Node) {
	axis := 0
	if side == Right {
		axis = 1
	}
	return SliceAlong(coef, axis, 0, r), SliceAlong(coef, axis, r, coef.Shape().Dim(axis))
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
	return TimesSmallTransposed(coefficients, basis)
}
