package projector

import (
	"math"
	"testing"

	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/stretchr/testify/require"
)

// TestComplementDirectionsLieOutsideTheBasis: the complement's directions are unit vectors
// orthogonal to the basis (one basis and a stack of them), drawn anew at each step and the same
// again for the same seed and step (a resumed run draws what an uninterrupted one drew).
func TestComplementDirectionsLieOutsideTheBasis(t *testing.T) {
	const rows, r, s = 40, 6, 5
	q := toFloat32(denseOf(RandomOrthonormal(rows, r, 3)))
	for _, stackedBases := range []bool{false, true} {
		outs, err := ExecOnceN(testBackend(t), func(q *Node) []*Node {
			g := q.Graph()
			basis := q
			if stackedBases {
				basis = Stack([]*Node{q, q, q}, 0)
			}
			draw := func(step int64, seed uint64) *Node {
				return ComplementDirections(ComplementSeed(Const(g, step), seed), basis, s)
			}
			omega := draw(7, 1)
			inside := maxAbs(transposedTimesAny(basis, omega))                              // Qᵀ·Ω
			length := maxAbs(AddScalar(Sqrt(ReduceSum(Square(omega), omega.Rank()-2)), -1)) // ‖Ωⱼ‖ − 1
			return []*Node{inside, length, maxAbs(Sub(omega, draw(7, 1))), maxAbs(Sub(omega, draw(8, 1))), maxAbs(Sub(omega, draw(7, 2)))}
		}, q)
		require.NoError(t, err)
		require.Less(t, outs[0].Value().(float32), float32(1e-5), "stacked %v: Qᵀ·Ω", stackedBases)
		require.Less(t, outs[1].Value().(float32), float32(1e-5), "stacked %v: unit columns", stackedBases)
		require.Equal(t, float32(0), outs[2].Value().(float32), "stacked %v: same seed and step, same directions", stackedBases)
		require.Greater(t, outs[3].Value().(float32), float32(0.1), "stacked %v: a new step draws new directions", stackedBases)
		require.Greater(t, outs[4].Value().(float32), float32(0.1), "stacked %v: another variable draws other directions", stackedBases)
	}
}

// maxAbs is the largest magnitude of x's entries.
func maxAbs(x *Node) *Node { return ReduceAllMax(Abs(x)) }

// transposedTimesAny is aᵀ·b for two matrices or two stacks of them.
func transposedTimesAny(a, b *Node) *Node {
	if a.Rank() == 2 {
		return TransposedTimes(a, b)
	}
	return transposedTimesStack(a, b)
}

// TestDirectStepWithComplementEqualsTheFullGradientsProjections: with the complement's
// directions joining the basis, the basis's coefficient and tracking products are DirectStep's
// exactly, and the complement's coefficient is the whole batch's ∂W projected on its directions,
// on both sides, the basis on W's smaller side and on its larger one.
func TestDirectStepWithComplementEqualsTheFullGradientsProjections(t *testing.T) {
	const s = 2
	forEachDirectLayout(t, 10, func(l directLayout) {
		outs, err := ExecOnceN(testBackend(t), func(x, dy, q, omega *Node) []*Node {
			dirs := ComplementDirections(ComplementSeed(Const(x.Graph(), int64(3)), 5), q, s)
			coef, tp := DirectStep(x, dy, q, Transpose(omega, 0, 1), l.side, l.k)
			coefC, compC, tpC := DirectStepWithComplement(x, dy, q, dirs, Transpose(omega, 0, 1), l.side, l.k)
			grad := TransposedTimes(x, dy)
			return []*Node{maxAbs(Sub(coef, coefC)), maxAbs(Sub(tp.Power, tpC.Power)), maxAbs(Sub(tp.Sketch, tpC.Sketch)),
				relativeError(compC, ProjectMatrix(grad, dirs, l.side))}
		}, l.inputs()...)
		require.NoError(t, err)
		for i, o := range outs[:3] {
			require.Less(t, o.Value().(float32), float32(1e-5), "%s: the basis's product %d", l, i)
		}
		require.Less(t, outs[3].Value().(float32), float32(1e-5), "%s: the complement's coefficient", l)
	})
}

// TestComplementStepIsTheBaseStepsLength: the complement's step points against its coefficient
// gradient; after a normalising base optimizer its RMS is scale times the base step's, after a
// proportional one (SGD) it is the base step's gain on the coefficient, times scale; it is zero
// for a skipped (zero) base step, a zero gradient and a non-finite one.
func TestComplementStepIsTheBaseStepsLength(t *testing.T) {
	d := tensors.FromValue([][]float32{{3, -4}, {0, 1}})
	coef := tensors.FromValue([][]float32{{1, -2, 3}, {0, 1, -1}})
	step := tensors.FromValue([][]float32{{0.01, -0.02, 0.03}, {0, 0.01, -0.01}}) // 0.01 × coef: SGD's gain
	inf := float32(math.Inf(1))
	for _, normalized := range []bool{true, false} {
		outs, err := ExecOnceN(testBackend(t), func(d, coef, step *Node) []*Node {
			c := ComplementStep(d, coef, step, 2, normalized)
			rms := func(x *Node) *Node { return Sqrt(ReduceAllMean(Square(x))) }
			// c = −k·d with k > 0: c + k·d = 0 for k = −⟨c, d⟩/‖d‖².
			k := Neg(Div(ReduceAllSum(Mul(c, d)), ReduceAllSum(Square(d))))
			return []*Node{Div(rms(c), rms(step)), k, maxAbs(Add(c, Mul(k, d))),
				maxAbs(ComplementStep(d, coef, ZerosLike(step), 2, normalized)), maxAbs(ComplementStep(ZerosLike(d), coef, step, 2, normalized)),
				maxAbs(ComplementStep(Add(d, Const(d.Graph(), [][]float32{{inf, 0}, {0, 0}})), coef, step, 2, normalized))}
		}, d, coef, step)
		require.NoError(t, err)
		if normalized {
			require.InDelta(t, 2, outs[0].Value().(float32), 1e-5, "normalised: RMS scale × the base step's")
		} else {
			require.InDelta(t, 2*0.01, outs[1].Value().(float32), 1e-7, "proportional: scale × the base step's gain on the coefficient")
		}
		require.Greater(t, outs[1].Value().(float32), float32(0), "against the gradient")
		require.Less(t, outs[2].Value().(float32), float32(1e-7), "along −D")
		for i, what := range []string{"a skipped step", "a zero gradient", "a non-finite gradient"} {
			require.Equal(t, float32(0), outs[3+i].Value().(float32), "normalised %v: %s", normalized, what)
		}
	}
}

// TestLimitGrowthLetsTheStepLengthenByOnePercent: the first step (no last length) goes as it
// is; a step more than ComplementGrowth times the last is shortened to exactly that, in its own
// direction; a shorter one goes as it is; a zero step (skipped) goes and keeps the last length.
func TestLimitGrowthLetsTheStepLengthenByOnePercent(t *testing.T) {
	step := tensors.FromValue([][]float32{{3, 0}, {0, 4}}) // length 5
	outs, err := ExecOnceN(testBackend(t), func(step *Node) []*Node {
		g := step.Graph()
		length := func(x *Node) *Node { return Sqrt(ReduceAllSum(Square(x))) }
		first, firstLen := LimitGrowth(step, Const(g, float32(0)))
		grown, grownLen := LimitGrowth(step, Const(g, float32(2)))
		shorter, shorterLen := LimitGrowth(step, Const(g, float32(10)))
		zero, zeroLen := LimitGrowth(ZerosLike(step), Const(g, float32(2)))
		direction := maxAbs(Sub(Div(grown, length(grown)), Div(step, length(step))))
		return []*Node{length(first), firstLen, length(grown), grownLen, direction, length(shorter), shorterLen, length(zero), zeroLen}
	}, step)
	require.NoError(t, err)
	got := make([]float32, len(outs))
	for i, o := range outs {
		got[i] = o.Value().(float32)
	}
	require.InDelta(t, 5, got[0], 1e-6, "the first step goes as it is")
	require.InDelta(t, 5, got[1], 1e-6)
	require.InDelta(t, 2*ComplementGrowth, got[2], 1e-6, "a step that grew too much is shortened to 1.01 × the last")
	require.InDelta(t, 2*ComplementGrowth, got[3], 1e-6)
	require.Less(t, got[4], float32(1e-6), "in its own direction")
	require.InDelta(t, 5, got[5], 1e-6, "a shorter step goes as it is")
	require.InDelta(t, 5, got[6], 1e-6)
	require.Zero(t, got[7], "a skipped step stays zero")
	require.InDelta(t, 2, got[8], 1e-6, "and keeps the last length: skipping does not lift the limit")
}

// TestComplementStepsIsTheStepOfEachMatrix: the batched form gives each matrix of a group
// LimitGrowth(ComplementStep(…)), with its own scale and last length, including a member whose
// gradient is not finite (a zero step, the last length kept), one whose base step was skipped
// and one whose step is held to 1.01 × its last length.
func TestComplementStepsIsTheStepOfEachMatrix(t *testing.T) {
	inf := float32(math.Inf(1))
	ds := [][][]float32{{{3, -4}, {0, 1}}, {{1, 2}, {inf, 0}}, {{-1, 0.5}, {2, 2}}, {{0.3, 0.1}, {-0.2, 0.4}}}
	coefs := [][][]float32{{{1, -2, 3}, {0, 1, -1}}, {{2, 0, 1}, {1, 1, 1}}, {{0, 1, 0}, {3, -1, 2}}, {{1, 1, 1}, {1, 1, 1}}}
	steps := [][][]float32{{{0.01, -0.02, 0.03}, {0, 0.01, -0.01}}, {{0.1, 0, 0}, {0, 0, 0.1}}, {{0, 0, 0}, {0, 0, 0}}, {{0.2, 0.1, 0}, {0, -0.1, 0.3}}}
	lasts := []float32{0, 1, 2, 0.05}
	scales := []float64{2, 1, 3, 4}
	for _, normalized := range []bool{true, false} {
		outs, err := ExecOnceN(testBackend(t), func(ds, coefs, steps, lasts *Node) []*Node {
			var dl, cl, sl []*Node
			for i := range 4 {
				dl = append(dl, Squeeze(Slice(ds, AxisElem(i)), 0))
				cl = append(cl, Squeeze(Slice(coefs, AxisElem(i)), 0))
				sl = append(sl, Squeeze(Slice(steps, AxisElem(i)), 0))
			}
			batched, lengths := ComplementSteps(dl, cl, sl, scales, normalized, lasts)
			var wantLengths []*Node
			errs := []*Node{}
			for i := range 4 {
				want, length := LimitGrowth(ComplementStep(dl[i], cl[i], sl[i], scales[i], normalized), Reshape(Slice(lasts, AxisElem(i))))
				errs = append(errs, maxAbs(Sub(batched[i], want)))
				wantLengths = append(wantLengths, length)
			}
			return []*Node{Stack(errs, 0), lengths, Stack(wantLengths, 0), maxAbs(Stack(batched, 0))}
		}, ds, coefs, steps, lasts)
		require.NoError(t, err)
		for i, e := range outs[0].Value().([]float32) {
			require.Less(t, e, float32(1e-6), "normalised %v: matrix %d's step", normalized, i)
		}
		require.InDeltaSlice(t, outs[2].Value(), outs[1].Value(), 1e-6, "normalised %v: the lengths", normalized)
		require.Positive(t, outs[3].Value().(float32), "the steps are not all zero")
	}
}
