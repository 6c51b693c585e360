package projector

import (
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gradsub/gradsub/internal/upstream"
)

// DefaultJacobiSweeps is the number of Jacobi sweeps used by SymmetricEigen. Jacobi converges
// quadratically once off-diagonal entries are small: measured against gonum in float64, 6 sweeps
// reach 1e-9 relative accuracy up to n = 24 and 5 do not; 8 leave a margin for larger n.
const DefaultJacobiSweeps = 8

// SymmetricEigen decomposes the symmetric matrix a ([n, n]) as a = U·diag(λ)·Uᵀ with Jacobi
// rotations, built from products and elementwise ops only, so it runs on every GoMLX backend.
//
// It returns the eigenvalues sorted in descending order ([n]) and the matching eigenvectors as the
// columns of vectors ([n, n]).
//
// The rotations are applied in parallel (round-robin) order: each iteration of a While loop
// rotates n/2 disjoint (p, q) pairs at once with one orthogonal matrix, so a sweep takes n−1
// iterations rather than n(n−1)/2. Loop iterations, not FLOPs, dominate on small matrices.
// Intended for n ≤ 64 (Gram matrices of a few dozen snapshots).
func SymmetricEigen(a *Node, sweeps int) (values, vectors *Node) {
	return sortDescending(symmetricEigen(a, sweeps, nil))
}

// symmetricEigen is SymmetricEigen without the final sort; a non-nil run (scalar bool) skips the
// rotations when false (the result is then meaningless), so callers can gate the work without
// nesting closures — the Go backend supports no While inside an If.
func symmetricEigen(a *Node, sweeps int, run *Node) (values, vectors *Node) {
	if a.Rank() != 2 || a.Shape().Dim(0) != a.Shape().Dim(1) {
		panicf("SymmetricEigen: want a square matrix, got shape %s", a.Shape())
	}
	if !a.DType().IsFloat() {
		panicf("SymmetricEigen: want a float matrix, got dtype %s", a.DType())
	}
	g := a.Graph()
	n := a.Shape().Dim(0)
	dtype := a.DType()
	if n == 1 {
		return Reshape(a, 1), DiagonalWithValue(ScalarOne(g, dtype), 1)
	}
	// Symmetrise: rounding in a Gram product can leave a tiny asymmetry that Jacobi would amplify.
	a = MulScalar(Add(a, Transpose(a, 0, 1)), 0.5)
	// An odd size is padded with a zero row and column: rotations pairing the pad have a zero
	// off-diagonal entry, so they are identities and the pad never mixes with the rest.
	m := n + n%2
	if m != n {
		a = Pad(a, ScalarZero(g, dtype), PadAxis{End: 1}, PadAxis{End: 1})
	}
	eye := DiagonalWithValue(ScalarOne(g, dtype), m)

	rounds := m - 1
	pTable, qTable := roundRobinPairs(m)
	total := Const(g, int32(rounds*sweeps))
	if run != nil {
		total = Where(run, total, upstream.ZeroOf(total))
	}
	i32 := shapes.Make(dtypes.Int32)
	trips := rounds * sweeps
	// The loop limit travels in the state: closures capture nothing (see gate).
	cond := newIsolatedClosure(g, trips, func(g *Graph) []*Node {
		i := Parameter(g, "i", i32)
		limit := Parameter(g, "limit", i32)
		am := Parameter(g, "a", a.Shape())
		_ = Parameter(g, "u", eye.Shape())
		return []*Node{LogicalAnd(LessThan(i, limit), LogicalNot(jacobiConverged(g, am)))}
	})
	body := newIsolatedClosure(g, trips, func(g *Graph) []*Node {
		i := Parameter(g, "i", i32)
		limit := Parameter(g, "limit", i32)
		am := Parameter(g, "a", a.Shape())
		u := Parameter(g, "u", eye.Shape())
		aNext, uNext := jacobiRound(g, i, am, u, pTable, qTable)
		return []*Node{AddScalar(i, 1), limit, aNext, uNext}
	})
	out := While(cond, body, Const(g, int32(0)), total, a, eye)
	values = ReduceSum(Mul(out[2], eye), -1)
	vectors = out[3]
	if m != n {
		values = Slice(values, AxisRange(0, n))
		vectors = Slice(vectors, AxisRange(0, n), AxisRange(0, n))
	}
	return values, vectors
}

// jacobiConverged says whether am is diagonal to working precision, ‖offdiag(a)‖ ≤ 10·tiny·‖a‖:
// a small Gram matrix converges in a few sweeps, and stopping early saves the remaining ones a
// While iteration each (most of a refresh's time on small models). It builds in g, a closure's
// graph.
func jacobiConverged(g *Graph, am *Node) *Node {
	dtype, m := am.DType(), am.Shape().Dim(0)
	total := ReduceAllSum(Square(am))
	offMask := OneMinus(DiagonalWithValue(ScalarOne(g, dtype), m))
	off := ReduceAllSum(Square(Mul(am, offMask)))
	tol := 10 * tinyFor(dtype)
	return LessOrEqual(off, MulScalar(total, tol*tol))
}

// roundRobinPairs is the Jacobi sweep's round-robin schedule for an even size m: in round r,
// position 0 stays and the others rotate; pair i is (slot i, slot m−1−i). pTable and qTable
// ([rounds, m/2, m]) hold each round's pairs as one-hot rows.
func roundRobinPairs(m int) (pTable, qTable [][][]float64) {
	rounds, half := m-1, m/2
	pTable = make([][][]float64, rounds)
	qTable = make([][][]float64, rounds)
	for r := range rounds {
		slots := make([]int, m)
		slots[0] = 0
		for i := 1; i < m; i++ {
			slots[i] = 1 + (i-1+r)%(m-1)
		}
		pTable[r] = make([][]float64, half)
		qTable[r] = make([][]float64, half)
		for i := range half {
			p, q := slots[i], slots[m-1-i]
			if p > q {
				p, q = q, p
			}
			pTable[r][i] = make([]float64, m)
			qTable[r][i] = make([]float64, m)
			pTable[r][i][p] = 1
			qTable[r][i][q] = 1
		}
	}
	return pTable, qTable
}

// jacobiRound applies round i of the schedule (pTable, qTable) to the matrix am ([m, m]) and
// accumulates its rotation into u: every pair of the round is rotated at once (they are
// disjoint). It builds in g, a closure's graph: it captures nothing from outside.
func jacobiRound(g *Graph, i, am, u *Node, pTable, qTable [][][]float64) (aNext, uNext *Node) {
	dtype := am.DType()
	m := am.Shape().Dim(0)
	rounds, half := len(pTable), m/2
	// This round's pairs: select the one-hot tables' row with a product (no DynamicSlice
	// on the Go backend).
	round := OneHot(ModScalar(i, rounds), rounds, dtype)                                               // [rounds]
	pm := Reshape(DotProduct(round, Reshape(ConstAsDType(g, dtype, pTable), rounds, half*m)), half, m) // [m/2, m]
	qm := Reshape(DotProduct(round, Reshape(ConstAsDType(g, dtype, qTable), rounds, half*m)), half, m) // [m/2, m]
	aq := DotProduct(am, Transpose(qm, 0, 1))                                                          // [m, m/2]: columns q of a
	ap := DotProduct(am, Transpose(pm, 0, 1))                                                          // [m, m/2]: columns p of a
	apq := ReduceSum(Mul(Transpose(pm, 0, 1), aq), 0)                                                  // [m/2]
	app := ReduceSum(Mul(Transpose(pm, 0, 1), ap), 0)
	aqq := ReduceSum(Mul(Transpose(qm, 0, 1), aq), 0)
	// Rotation angles (Numerical Recipes' formulation): θ = (a_qq − a_pp)/(2a_pq),
	// t = sign(θ)/(|θ| + √(θ²+1)), c = 1/√(t²+1), s = t·c; t = 0 where a_pq is negligible.
	scale := Add(Abs(app), Abs(aqq))
	negligible := LessOrEqual(Abs(apq), MulScalar(scale, tinyFor(dtype)))
	safeApq := Where(negligible, upstream.OneOf(apq), apq)
	theta := Div(Sub(aqq, app), MulScalar(safeApq, 2))
	signTheta := Where(GreaterOrEqual(theta, upstream.ZeroOf(theta)), upstream.OneOf(theta), Neg(upstream.OneOf(theta)))
	t := Div(signTheta, Add(Abs(theta), Sqrt(AddScalar(Square(theta), 1))))
	t = Where(negligible, upstream.ZeroOf(t), t)
	c := Rsqrt(AddScalar(Square(t), 1))
	s := Mul(t, c)
	// J = I + Σ_pairs (c−1)(e_p e_pᵀ + e_q e_qᵀ) + s(e_p e_qᵀ − e_q e_pᵀ): the pairs are disjoint.
	scaled := func(x, w *Node) *Node { return Mul(x, InsertAxes(w, -1)) } // rows of x times w
	cm1 := AddScalar(c, -1)
	eye := DiagonalWithValue(ScalarOne(g, dtype), m) // the body's own: closures capture nothing
	j := Add(eye, Add(
		Add(DotProduct(Transpose(pm, 0, 1), scaled(pm, cm1)), DotProduct(Transpose(qm, 0, 1), scaled(qm, cm1))),
		Sub(DotProduct(Transpose(pm, 0, 1), scaled(qm, s)), DotProduct(Transpose(qm, 0, 1), scaled(pm, s)))))
	aNext = DotProduct(DotProduct(Transpose(j, 0, 1), am), j)
	uNext = DotProduct(u, j)
	return aNext, uNext
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
	sortedValues := DotProduct(Transpose(perm, 0, 1), values) // sorted[r] = λ_{i: rank_i = r}
	sortedVectors := DotProduct(vectors, perm)                // column r = u_{i: rank_i = r}
	return sortedValues, sortedVectors
}
