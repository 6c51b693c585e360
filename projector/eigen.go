package projector

import (
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/support/exceptions"
)

// DefaultJacobiSweeps is the number of cyclic Jacobi sweeps used by SymmetricEigen. Cyclic Jacobi
// converges quadratically once off-diagonal entries are small; for the n ≤ 64 matrices this
// package decomposes, 10 sweeps take the off-diagonal norm to rounding level.
const DefaultJacobiSweeps = 10

// SymmetricEigen decomposes the symmetric matrix a ([n, n]) as a = U·diag(λ)·Uᵀ with cyclic Jacobi
// rotations, built from products and elementwise ops only, so it runs on every GoMLX backend.
//
// It returns the eigenvalues sorted in descending order ([n]) and the matching eigenvectors as the
// columns of vectors ([n, n]). The rotations run inside a While loop, so the graph stays small
// whatever n and the number of sweeps.
//
// Only the lower-cost n ≤ 64 case is intended (Gram matrices of a few dozen snapshots, k×k
// matrices): each rotation costs two n×n×n products.
func SymmetricEigen(a *Node, sweeps int) (values, vectors *Node) {
	return sortDescending(symmetricEigen(a, sweeps, nil))
}

// symmetricEigen is SymmetricEigen without the final sort; a non-nil run (scalar bool) skips the rotations when false
// (the result is then meaningless), so callers can gate the work without nesting closures — the Go
// backend supports no While inside an If.
func symmetricEigen(a *Node, sweeps int, run *Node) (values, vectors *Node) {
	if a.Rank() != 2 || a.Shape().Dim(0) != a.Shape().Dim(1) {
		exceptions.Panicf("projector.SymmetricEigen: want a square matrix, got shape %s", a.Shape())
	}
	if !a.DType().IsFloat() {
		exceptions.Panicf("projector.SymmetricEigen: want a float matrix, got dtype %s", a.DType())
	}
	g := a.Graph()
	n := a.Shape().Dim(0)
	dtype := a.DType()
	eye := DiagonalWithValue(ScalarOne(g, dtype), n)
	if n == 1 {
		return Reshape(a, 1), eye
	}
	// Symmetrise: rounding in a Gram product can leave a tiny asymmetry that Jacobi would amplify.
	a = MulScalar(Add(a, Transpose(a, 0, 1)), 0.5)

	// The loop state carries the current pair (p, q), p < q, advanced in cyclic row order.
	total := Const(g, int32(n*(n-1)/2*sweeps))
	if run != nil {
		total = Where(run, total, ZerosLike(total))
	}
	i32 := shapes.Make(dtypes.Int32)
	cond := newIsolatedClosure(g, n*(n-1)/2*sweeps, func(g *Graph) []*Node {
		i := Parameter(g, "i", i32)
		_ = Parameter(g, "p", i32)
		_ = Parameter(g, "q", i32)
		_ = Parameter(g, "a", a.Shape())
		_ = Parameter(g, "u", eye.Shape())
		return []*Node{LessThan(i, total)}
	})
	body := newIsolatedClosure(g, n*(n-1)/2*sweeps, func(g *Graph) []*Node {
		i := Parameter(g, "i", i32)
		p := Parameter(g, "p", i32)
		q := Parameter(g, "q", i32)
		am := Parameter(g, "a", a.Shape())
		u := Parameter(g, "u", eye.Shape())
		ep := OneHot(p, n, dtype) // [n]
		eq := OneHot(q, n, dtype)
		// a_pq, a_pp, a_qq as one-hot quadratic forms.
		aEq := dot(am, eq)
		aEp := dot(am, ep)
		apq := ReduceAllSum(Mul(ep, aEq))
		app := ReduceAllSum(Mul(ep, aEp))
		aqq := ReduceAllSum(Mul(eq, aEq))
		// Rotation angle (Numerical Recipes' formulation): θ = (a_qq − a_pp)/(2a_pq),
		// t = sign(θ)/(|θ| + √(θ²+1)), c = 1/√(t²+1), s = t·c. Where a_pq is negligible, t = 0.
		scale := Add(Abs(app), Abs(aqq))
		negligible := LessOrEqual(Abs(apq), MulScalar(scale, tinyFor(dtype)))
		safeApq := Where(negligible, OnesLike(apq), apq)
		theta := Div(Sub(aqq, app), MulScalar(safeApq, 2))
		signTheta := Where(GreaterOrEqual(theta, ZerosLike(theta)), OnesLike(theta), Neg(OnesLike(theta)))
		t := Div(signTheta, Add(Abs(theta), Sqrt(AddScalar(Square(theta), 1))))
		t = Where(negligible, ZerosLike(t), t)
		c := Rsqrt(AddScalar(Square(t), 1))
		s := Mul(t, c)
		// J = I + (c−1)(e_p e_pᵀ + e_q e_qᵀ) + s(e_p e_qᵀ − e_q e_pᵀ)
		outer := func(x, y *Node) *Node { return Mul(InsertAxes(x, -1), InsertAxes(y, 0)) }
		j := Add(DiagonalWithValue(ScalarOne(g, dtype), n),
			Add(Mul(AddScalar(c, -1), Add(outer(ep, ep), outer(eq, eq))),
				Mul(s, Sub(outer(ep, eq), outer(eq, ep)))))
		aNext := dot(dot(Transpose(j, 0, 1), am), j)
		uNext := dot(u, j)
		// Next pair: (p, q+1), or (p+1, p+2) at the end of a row, or (0, 1) at the end of a sweep.
		rowDone := GreaterOrEqual(AddScalar(q, 1), Const(g, int32(n)))
		sweepDone := LogicalAnd(rowDone, GreaterOrEqual(AddScalar(p, 2), Const(g, int32(n))))
		pNext := Where(rowDone, AddScalar(p, 1), p)
		qNext := Where(rowDone, AddScalar(p, 2), AddScalar(q, 1))
		pNext = Where(sweepDone, ZerosLike(p), pNext)
		qNext = Where(sweepDone, OnesLike(q), qNext)
		return []*Node{AddScalar(i, 1), pNext, qNext, aNext, uNext}
	})
	out := While(cond, body, Const(g, int32(0)), Const(g, int32(0)), Const(g, int32(1)), a, eye)
	return ReduceSum(Mul(out[3], eye), -1), out[4]
}

// tinyFor is the relative size below which an off-diagonal entry counts as zero.
func tinyFor(dtype dtypes.DType) float64 {
	if dtype == dtypes.Float64 {
		return 1e-15
	}
	return 1e-7
}

// sortDescending orders eigenvalues (and the matching columns of vectors) from largest to
// smallest, with a permutation matrix built from pairwise comparisons (ties keep index order).
func sortDescending(values, vectors *Node) (*Node, *Node) {
	g := values.Graph()
	n := values.Shape().Dim(0)
	dtype := values.DType()
	vi := InsertAxes(values, -1) // [n, 1]: λ_i
	vj := InsertAxes(values, 0)  // [1, n]: λ_j
	idx := Iota(g, shapes.Make(dtypes.Int32, n), 0)
	ii := InsertAxes(idx, -1)
	jj := InsertAxes(idx, 0)
	// j comes before i when λ_j > λ_i, or they tie and j < i.
	before := LogicalOr(GreaterThan(vj, vi), LogicalAnd(Equal(vj, vi), LessThan(jj, ii)))
	rank := ReduceSum(ConvertDType(before, dtypes.Int32), -1) // [n]: position of λ_i once sorted
	perm := OneHot(rank, n, dtype)                            // perm[i, rank_i] = 1
	sortedValues := dot(Transpose(perm, 0, 1), values)        // sorted[r] = λ_{i: rank_i = r}
	sortedVectors := dot(vectors, perm)                       // column r = u_{i: rank_i = r}
	return sortedValues, sortedVectors
}

// dot is the plain vector/matrix product (numpy.dot semantics for ranks ≤ 2).
func dot(lhs, rhs *Node) *Node { return Dot(lhs, rhs).Product() }
