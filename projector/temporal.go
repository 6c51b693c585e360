package projector

import (
	"fmt"
	"math"

	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gradsub/gradsub/internal/upstream"
)

// Temporal is a temporal subspace learned in the graph from a stack of flattened gradients.
//
// All fields are graph nodes; shapes are fixed at graph-build time by the stack's shape and the
// maximum rank k, so a refresh that picks a different effective rank (variance threshold) does not
// change shapes: directions beyond Rank are zero columns of Basis.
type Temporal struct {
	// Basis [P, k]: orthonormal columns spanning the top singular directions, in the stack's dtype.
	// Columns at index ≥ Rank are zero.
	Basis *Node
	// SingularValues [k], descending, in the stack's dtype (zero beyond the stack's numerical rank).
	SingularValues *Node
	// ExplainedVariance (scalar): Σ_{i<Rank} σᵢ² / Σ_all σᵢ², the share of the stack's energy kept.
	ExplainedVariance *Node
	// Rank (scalar int32): the number of non-zero columns of Basis.
	Rank *Node
	// Valid (scalar bool): false when the stack had no finite, non-zero energy; Basis is then all
	// zeros and callers should keep their previous basis.
	Valid *Node
}

// TemporalOptions configures LearnTemporal.
type TemporalOptions struct {
	// Rank k: the number of columns of the basis (the maximum rank). Required, 1 ≤ k ≤ min(n, P).
	Rank int
	// VarianceThreshold in (0, 1]: if set, the effective rank is the smallest r ≤ k whose leading
	// directions explain at least this share of the stack's energy. Zero keeps all k directions.
	VarianceThreshold float64
	// ComputeDType of the Gram matrix and eigen-solve. Invalid (the default) means Float64: the
	// method of snapshots squares the condition number, and the n×n work is tiny.
	ComputeDType dtypes.DType
	// Sweeps of the Jacobi eigen-solver; 0 means DefaultJacobiSweeps.
	Sweeps int
}

// CheckTemporal validates a temporal subspace request before any graph is built, with an error
// that names the problem and what would work.
func CheckTemporal(numSnapshots, dim int, opts TemporalOptions) error {
	switch {
	case opts.Rank < 1:
		return fmt.Errorf("rank %d is impossible: a subspace needs at least 1 direction (use rank ≥ 1)", opts.Rank)
	case numSnapshots < 1:
		return fmt.Errorf("no snapshots: the stack of gradients has %d rows (warm-up must record at least rank=%d gradients)", numSnapshots, opts.Rank)
	case opts.Rank > numSnapshots:
		return fmt.Errorf("rank %d exceeds the %d gradient snapshots: n snapshots span at most n directions (lower the rank to ≤ %d, or record more warm-up steps)", opts.Rank, numSnapshots, numSnapshots)
	case opts.Rank > dim:
		return fmt.Errorf("rank %d exceeds the variable's %d elements (lower the rank to ≤ %d)", opts.Rank, dim, dim)
	case opts.VarianceThreshold < 0 || opts.VarianceThreshold > 1:
		return fmt.Errorf("variance threshold %g is outside [0, 1] (use e.g. 0.9, or 0 to keep exactly rank directions)", opts.VarianceThreshold)
	}
	return nil
}

// LearnTemporal learns the top-k right singular vectors of a stack of flattened gradients
// snapshots ([n, P], one gradient per row) by the method of snapshots: the n×n Gram matrix
// G·Gᵀ = U·Σ²·Uᵀ is decomposed with Jacobi rotations, then V = Gᵀ·U·Σ⁻¹. This costs n²·P
// multiply-adds, against P²·n for an eigen-solve of GᵀG, and needs no SVD op (GoMLX has none).
//
// The result is re-orthonormalised (CGS2), so it holds to rounding level even when the stack is
// ill-conditioned. A zero or non-finite stack yields Valid = false and a zero basis, never NaN.
func LearnTemporal(snapshots *Node, opts TemporalOptions) Temporal {
	return learnTemporal(snapshots, opts, nil, Temporal{})
}

// LearnTemporalWhen is LearnTemporal taken only when learn (a scalar bool) is true; otherwise
// it returns previous (a Temporal of the same shapes, e.g. read from state variables). The
// eigen-solve's loop runs no iteration on the other steps; the Gram product and the basis
// products are computed on every step (see learnTemporal).
//
// A learned result that is not Valid (zero or non-finite stack) is replaced by previous, with
// Valid false: callers keep their basis and can count the event.
func LearnTemporalWhen(learn, snapshots *Node, opts TemporalOptions, previous Temporal) Temporal {
	return learnTemporal(snapshots, opts, learn, previous)
}

func learnTemporal(snapshots *Node, opts TemporalOptions, learn *Node, previous Temporal) Temporal {
	if snapshots.Rank() != 2 {
		panicf("LearnTemporal: want a stack of flattened gradients [n, P], got shape %s", snapshots.Shape())
	}
	n, p := snapshots.Shape().Dim(0), snapshots.Shape().Dim(1)
	if err := CheckTemporal(n, p, opts); err != nil {
		panicf("LearnTemporal: %v", err)
	}
	cdt := opts.ComputeDType
	if cdt == dtypes.InvalidDType {
		cdt = dtypes.Float64
	}
	sweeps := opts.Sweeps
	if sweeps <= 0 {
		sweeps = DefaultJacobiSweeps
	}

	// Stage 1, n²·P: the Gram matrix of the stack. A non-finite value would poison it: the stack
	// is then reported invalid (and its results masked). The product runs in the snapshots'
	// dtype (on every step: see below), on the stack scaled to unit max-magnitude so that no
	// square underflows or overflows; the eigen-solve runs in cdt. The stack is read in as few
	// passes as possible: a sum (finite), a max and a min (scale), one scaling.
	finite := IsFinite(ReduceAllSum(snapshots))
	peak := Max(ReduceAllMax(snapshots), Neg(ReduceAllMin(snapshots)))
	// A stack whose largest value is below the dtype's normal range (denormals) carries no
	// usable direction: products in that dtype treat such values as zeros.
	smallestNormal := math.SmallestNonzeroFloat64 * (1 << 52)
	if snapshots.DType() != dtypes.Float64 {
		smallestNormal = 1.1754943508222875e-38 // float32
	}
	finite = LogicalAnd(finite, GreaterOrEqual(ConvertDType(peak, dtypes.Float64), Scalar(snapshots.Graph(), dtypes.Float64, smallestNormal)))
	peak = Where(finite, peak, upstream.OneOf(peak))
	stack := Div(snapshots, peak)
	scaledGram := ConvertDType(TimesTransposed(stack, stack), cdt) // of the scaled stack: temporalFromEigen reads it too
	scaledGram = Where(finite, scaledGram, upstream.ZeroOf(scaledGram))
	gram := Mul(scaledGram, Square(ConvertDType(peak, cdt)))

	// Stage 2, n³ per rotation: the eigen-solve (its own While, zero trips when not learning).
	// Its result is sorted in stage 3.
	lambda, u := symmetricEigen(gram, sweeps, learn)

	// Stage 3, n·k·P: the basis, its spectrum and the chosen rank.
	t := temporalFromEigen(stack, scaledGram, lambda, u, finite, opts, cdt)
	if learn == nil {
		return t
	}
	// Stages 1 and 3 run on every step, and only the eigen-solve's loop is gated: the large
	// products cost n·(n+k)·P multiply-adds a step, and inside a gate they could hang the Go
	// backend's parallel scheduler (compute v0.1.14: an op waiting for a worker slot held by
	// an idle executor), as the matrix subspace's old gated learning did.
	take := LogicalAnd(learn, t.Valid)
	return Temporal{
		Basis:             Where(take, t.Basis, previous.Basis),
		SingularValues:    Where(take, t.SingularValues, previous.SingularValues),
		ExplainedVariance: Where(take, t.ExplainedVariance, previous.ExplainedVariance),
		Rank:              Where(take, t.Rank, previous.Rank),
		Valid:             take,
	}
}

// temporalFromEigen turns the eigen-decomposition of the Gram matrix into the basis V = Gᵀ·U·Σ⁻¹.
// scaledGram is snapshots·snapshotsᵀ in cdt (snapshots as passed: scaled to unit max-magnitude).
func temporalFromEigen(snapshots, scaledGram, lambda, u, finite *Node, opts TemporalOptions, cdt dtypes.DType) Temporal {
	g := snapshots.Graph()
	n := snapshots.Shape().Dim(0)
	k := opts.Rank
	outDType := snapshots.DType()
	// The basis is formed in the snapshots' own dtype (they come scaled to unit max-magnitude):
	// its n·k·P product runs on every step (see learnTemporal), and its orthonormality is
	// restored below anyway.
	stack := snapshots

	lambda, u = sortDescending(lambda, u)
	lambda = Max(lambda, upstream.ZeroOf(lambda)) // rounding can leave tiny negatives
	total := ReduceAllSum(lambda)
	valid := LogicalAnd(finite, GreaterThan(total, ScalarZero(g, cdt)))

	// A direction is numerically meaningful if its energy is above rounding noise of the largest.
	lambdaMax := ReduceAllMax(lambda)
	// The Gram matrix is formed in the snapshots' dtype: its rounding, relative to the largest
	// eigenvalue, is about n·ε of that dtype.
	eps := 1e-13
	if outDType != dtypes.Float64 {
		eps = 1e-6
	}
	noise := MulScalar(lambdaMax, float64(n)*eps)
	lambdaK := Slice(lambda, AxisRange(0, k))
	usable := GreaterThan(lambdaK, noise)

	// Effective rank: all k, or the fewest leading directions reaching the variance threshold.
	keep := usable
	safeTotal := Where(valid, total, upstream.OneOf(total))
	if opts.VarianceThreshold > 0 {
		cumShare := Div(CumSum(lambdaK, 0), safeTotal)
		// Direction i is kept if the directions before it explain less than the threshold.
		before := Sub(cumShare, Div(lambdaK, safeTotal))
		keep = LogicalAnd(keep, LessThan(before, Scalar(g, cdt, opts.VarianceThreshold*(1-1e-9))))
	}
	keep = LogicalAnd(keep, valid)
	rank := ReduceSum(ConvertDType(keep, dtypes.Int32), 0)

	sigma := Sqrt(lambdaK)
	v := basisFromEigen(stack, scaledGram, u, sigma, keep)
	v = Where(valid, v, upstream.ZeroOf(v)) // an invalid stack may have left NaN: never return it

	keptEnergy := ReduceAllSum(Where(keep, lambdaK, upstream.ZeroOf(lambdaK)))
	explained := Where(valid, Div(keptEnergy, safeTotal), upstream.ZeroOf(total))
	return Temporal{
		Basis:             ConvertDType(v, outDType),
		SingularValues:    ConvertDType(Where(usable, sigma, upstream.ZeroOf(sigma)), outDType),
		ExplainedVariance: ConvertDType(explained, outDType),
		Rank:              rank,
		Valid:             valid,
	}
}

// basisFromEigen is the temporal basis V ([P, k], orthonormal) of the snapshot stack ([n, P])
// from the eigenvectors u of its Gram matrix (scaledGram, [n, n]) and the singular values sigma
// of the k leading directions, of which keep ([k] bool) are kept (the others are zero columns).
func basisFromEigen(stack, scaledGram, u, sigma, keep *Node) *Node {
	g := stack.Graph()
	k := sigma.Shape().Dim(0)
	cdt, outDType := sigma.DType(), stack.DType()
	safeSigma := Where(keep, sigma, upstream.OneOf(sigma))
	// V = Gᵀ·U·Σ⁻¹ up to one positive factor (V is normalised below), in the stack's dtype without
	// overflow: the stack comes scaled to unit max-magnitude, and U is divided by σ/σ_max (at
	// most about 1e6 for a kept direction).
	relSigma := Div(safeSigma, SafeDivisor(ReduceAllMax(sigma)))
	ukC := Div(Slice(u, AxisRange(), AxisRange(0, k)), InsertAxes(relSigma, 0))
	ukC = Where(InsertAxes(keep, 0), ukC, upstream.ZeroOf(ukC)) // [n, k], in cdt
	v := TransposedTimes(stack, ConvertDType(ukC, outDType))    // [P, k]
	// V is orthonormal up to the eigen-solve's accuracy: a few scaled Newton–Schulz iterations
	// (two passes over V each, k²·P multiply-adds) make it orthonormal to rounding, where
	// Gram–Schmidt took 4k passes per column — on every step, since this runs outside the
	// learning gate. V is first divided by an upper bound of its largest singular value, read
	// off the k×k matrix VᵀV = ukᵀ·(stack·stackᵀ)·uk from the Gram matrix (Gershgorin's row
	// bound or the trace, the smaller, with a 0.1% margin): its singular values then lie in
	// about [0.9, 1], and three iterations reach float32 rounding. Divided by its Frobenius norm
	// instead, they lay in [≈0.9/√k, 1] and took six at k = 32 (most of a temporal step on a
	// 512×512 weight).
	vtv := DotProduct(TransposedTimes(ukC, scaledGram), ukC) // [k, k]
	trace := ReduceAllSum(Mul(vtv, DiagonalWithValue(ScalarOne(g, cdt), k)))
	bound := Min(ReduceAllMax(ReduceSum(Abs(vtv), 1)), trace)
	scale := ConvertDType(MulScalar(Sqrt(Max(bound, upstream.ZeroOf(bound))), 1.001), outDType)
	v = Div(v, SafeDivisor(scale))
	v = NewtonSchulz(v, 0.8)
	return v
}

// Coefficients returns Vᵀ·g: the coordinates ([k]) of the flattened gradient g ([P]) in the basis,
// as g·V: transposing V first copied all P·k of its values every step (on the Go backend, most of
// a temporal step on a 512×512 weight at k = 32).
func Coefficients(basis, g *Node) *Node {
	if g.Rank() == 1 {
		return DotProduct(g, basis)
	}
	return DotGeneral(basis, []int{0}, nil, g, []int{0}, nil) // columns of g: [k, cols]
}

// Lift returns V·c: the vector ([P]) with coordinates c ([k]) in the basis.
func Lift(basis, c *Node) *Node { return DotProduct(basis, c) }

// Project returns V·(Vᵀ·g), the orthogonal projection of the flattened g ([P]) onto span(V).
func Project(basis, g *Node) *Node { return Lift(basis, Coefficients(basis, g)) }

// RelativeResidual returns ‖g − V·Vᵀ·g‖ / ‖g‖ (scalar): 0 when the subspace holds g entirely,
// 1 when g is orthogonal to it. A zero g gives 0.
func RelativeResidual(basis, g *Node) *Node {
	resid := RelativeLength(Sub(g, Project(basis, g)), g)
	return AtMostOne(resid) // a gradient wholly outside the basis can round to 1 + ulp
}
