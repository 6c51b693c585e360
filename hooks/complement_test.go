package hooks

import (
	"hash/fnv"
	"math"
	"testing"

	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gradsub/gradsub/projector"
	"github.com/stretchr/testify/require"
	"gonum.org/v1/gonum/mat"
)

// TestComplementStepsOutsideTheBasis: on the first step (the basis is the fixed random start, so
// every run below steps from the same weights, gradient and basis), the complement adds to the
// published method's update a step outside the basis and nothing inside it:
//   - inside span(Q) the update is Complement(0)'s exactly, which lies in span(Q) alone;
//   - outside it the update is not zero and spans at most the complement's s directions;
//   - ComplementScale multiplies that part and leaves the rest.
func TestComplementStepsOutsideTheBasis(t *testing.T) {
	const rank, m, n = 3, 12, 16
	s := ComplementOf(m, rank)
	bases := map[string]func() optimizer.Interface{
		"adam": func() optimizer.Interface { return optimizer.Adam().LearningRate(0.01).Done() },
		// SGD's complement is off by default; asked for, it steps in proportion to the gradient.
		"sgd": func() optimizer.Interface { return optimizer.StochasticGradientDescent().WithLearningRate(0.1).Done() },
	}
	for name, base := range bases {
		t.Run(name, func(t *testing.T) { testComplementStepsOutsideTheBasis(t, base, rank, m, n, s) })
	}
}

// firstLayerStep is the toy's first weight's change ([m, n]) in the first step with cfg, in
// float64.
func firstLayerStep(t *testing.T, cfg *Config, m, n int) *mat.Dense {
	t.Helper()
	r := newRun(t, cfg.Done())
	r.float64 = true
	_, err := r.trainer.EvalStep(r.batch()) // creates and initialises the weights
	require.NoError(t, err)
	before := r.value(t, firstLayer)
	r.step(t)
	after := r.value(t, firstLayer)
	delta := mat.NewDense(m, n, nil)
	for i := range m {
		for j := range n {
			delta.Set(i, j, after[i*n+j]-before[i*n+j])
		}
	}
	return delta
}

// startBasisOf is the start basis of the variable at path ([m, rank]): the basis of its first step.
func startBasisOf(path string, m, rank int) *mat.Dense {
	hash := fnv.New64a()
	hash.Write([]byte(path))
	q := mat.NewDense(m, rank, nil)
	for i, row := range projector.RandomOrthonormal(m, rank, hash.Sum64()) {
		q.SetRow(i, row)
	}
	return q
}

// spanSplitter splits a matrix into its part in span(q) and the rest.
func spanSplitter(q *mat.Dense) func(delta *mat.Dense) (inside, outside *mat.Dense) {
	return func(delta *mat.Dense) (inside, outside *mat.Dense) {
		var coef mat.Dense
		coef.Mul(q.T(), delta)
		inside = new(mat.Dense)
		inside.Mul(q, &coef)
		outside = new(mat.Dense)
		outside.Sub(delta, inside)
		return inside, outside
	}
}

func testComplementStepsOutsideTheBasis(t *testing.T, base func() optimizer.Interface, rank, m, n, s int) {
	cfg := func() *Config { return Subspace(base()).Rank(rank).WarmUp(2) }
	plain := firstLayerStep(t, cfg().Complement(0), m, n)
	withComplement := firstLayerStep(t, cfg().Complement(s), m, n)
	doubled := firstLayerStep(t, cfg().Complement(s).ComplementScale(2*DefaultComplementScale), m, n)

	split := spanSplitter(startBasisOf(firstLayer, m, rank))
	norm := func(a mat.Matrix) float64 { return mat.Norm(a, 2) }
	distance := func(a, b mat.Matrix) float64 {
		var d mat.Dense
		d.Sub(a, b)
		return mat.Norm(&d, 2)
	}

	plainIn, plainOut := split(plain)
	require.Positive(t, norm(plainIn))
	require.Less(t, norm(plainOut), 1e-9*norm(plainIn), "without the complement the update lies in span(Q)")

	in, out := split(withComplement)
	require.Less(t, distance(in, plain), 1e-9*norm(plain), "inside span(Q) the complement changes nothing")
	require.Greater(t, norm(out), 1e-3*norm(in), "the complement steps outside span(Q)")
	var svd mat.SVD
	require.True(t, svd.Factorize(out, mat.SVDNone))
	values := svd.Values(nil)
	require.Greater(t, values[s-1], 1e-6*values[0], "it spans the complement's %d directions", s)
	if s < len(values) {
		require.Less(t, values[s], 1e-9*values[0], "and no more than %d", s)
	}

	in2, out2 := split(doubled)
	require.Less(t, distance(in2, in), 1e-9*norm(in), "ComplementScale leaves the basis's step")
	out.Scale(2, out)
	require.Less(t, distance(out2, out), 1e-9*norm(out), "ComplementScale(2γ) doubles the complement's step")
	require.False(t, math.IsNaN(norm(out2)))
}

// TestComplementIsConfigured: the number of directions and the scale are validated with errors
// that name the fix, read from -set params, and shown in the plan.
func TestComplementIsConfigured(t *testing.T) {
	adam := optimizer.Adam().Done()
	require.ErrorContains(t, Subspace(adam).Complement(-2).Validate(), "Complement(-2) is impossible")
	require.ErrorContains(t, Subspace(adam).ComplementScale(math.NaN()).Validate(), "ComplementScale(NaN)")
	require.ErrorContains(t, Subspace(adam).ComplementScale(-1).Validate(), "ComplementScale(-1)")
	require.ErrorContains(t, Subspace(adam).Mode(Temporal).Complement(4).Validate(), "Complement applies to the matrix subspace")
	require.NoError(t, Subspace(adam).Mode(Temporal).Validate(), "the automatic complement is no error in temporal mode")

	c := Subspace(adam)
	require.Equal(t, 16, c.complementOf(256, 8), "automatic: twice the rank")
	require.Equal(t, 6, c.complementOf(12, 3))
	require.Equal(t, 2, c.Complement(2).complementOf(256, 8))
	require.Equal(t, 0, c.Complement(0).complementOf(256, 8))
	require.Equal(t, 4, Subspace(adam).complementOf(8, 4), "at most the side's directions outside the basis")
	sgd := optimizer.StochasticGradientDescent().Done()
	require.Equal(t, 0, Subspace(sgd).complementOf(256, 8), "none by default after plain SGD")
	require.Equal(t, 2, Subspace(sgd).Complement(2).complementOf(256, 8), "unless asked for")

	opt := Subspace(adam).Rank(3).Done()
	newRun(t, opt).step(t)
	require.Contains(t, opt.PlanString(), "rank 3 + 6 random")
	require.Equal(t, 6, opt.Plan()[0].Complement)
	off := Subspace(adam).Rank(3).Complement(0).Done()
	newRun(t, off).step(t)
	require.NotContains(t, off.PlanString(), "random")

	params := DefaultParams()
	require.Equal(t, AutoComplement, params[ParamComplement])
	require.Equal(t, DefaultComplementScale, params[ParamComplementScale])
}
