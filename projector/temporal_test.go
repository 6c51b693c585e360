package projector

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gomlx/compute"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gradsub/gradsub/internal/backends"
	"github.com/stretchr/testify/require"
	"gonum.org/v1/gonum/mat"
)

// testBackend is the backend the tests share (backends.Shared): $GOMLX_BACKEND, or the Go backend.
func testBackend(t testing.TB) compute.Backend {
	b, err := backends.Shared()
	require.NoError(t, err)
	return b
}

// stackWithSpectrum returns an n×p float64 matrix U·diag(sigma)·Vᵀ with random orthonormal U, V.
func stackWithSpectrum(rng *rand.Rand, n, p int, sigma []float64) *mat.Dense {
	randOrth := func(rows, cols int) *mat.Dense {
		data := make([]float64, rows*cols)
		for i := range data {
			data[i] = rng.NormFloat64()
		}
		var qr mat.QR
		qr.Factorize(mat.NewDense(rows, cols, data))
		var q mat.Dense
		qr.QTo(&q)
		return mat.DenseCopyOf(q.Slice(0, rows, 0, cols))
	}
	r := len(sigma)
	u, v := randOrth(n, r), randOrth(p, r)
	var us mat.Dense
	us.Mul(u, mat.NewDiagDense(r, sigma))
	var out mat.Dense
	out.Mul(&us, v.T())
	return &out
}

func toFloat32(m *mat.Dense) *tensors.Tensor {
	r, c := m.Dims()
	flat := make([]float32, 0, r*c)
	for i := range r {
		for j := range c {
			flat = append(flat, float32(m.At(i, j)))
		}
	}
	return tensors.FromFlatDataAndDimensions(flat, r, c)
}

type temporalResult struct {
	basis       *mat.Dense
	sigma       []float64
	explained   float64
	rank        int
	valid       bool
	orthoErrMax float64
}

func learn(t *testing.T, stack *tensors.Tensor, opts TemporalOptions) temporalResult {
	t.Helper()
	outs, err := ExecOnceN(testBackend(t), func(s *Node) []*Node {
		tb := LearnTemporal(s, opts)
		return []*Node{tb.Basis, tb.SingularValues, tb.ExplainedVariance, tb.Rank, tb.Valid, OrthonormalityError(tb.Basis)}
	}, stack)
	require.NoError(t, err)
	p := outs[0].Shape().Dim(0)
	k := outs[0].Shape().Dim(1)
	basis32 := tensors.MustCopyFlatData[float32](outs[0])
	basis := mat.NewDense(p, k, nil)
	for i, x := range basis32 {
		require.False(t, math.IsNaN(float64(x)) || math.IsInf(float64(x), 0), "basis has non-finite entries")
		basis.Set(i/k, i%k, float64(x))
	}
	var sigma []float64
	for _, s := range tensors.MustCopyFlatData[float32](outs[1]) {
		sigma = append(sigma, float64(s))
	}
	return temporalResult{
		basis:       basis,
		sigma:       sigma,
		explained:   float64(outs[2].Value().(float32)),
		rank:        int(outs[3].Value().(int32)),
		valid:       outs[4].Value().(bool),
		orthoErrMax: float64(outs[5].Value().(float32)),
	}
}

// projectorDistance is ‖V₁V₁ᵀ − V₂V₂ᵀ‖₂: 0 for the same subspace, 1 for orthogonal ones.
func projectorDistance(v1, v2 mat.Matrix) float64 {
	var p1, p2, d mat.Dense
	p1.Mul(v1, v1.T())
	p2.Mul(v2, v2.T())
	d.Sub(&p1, &p2)
	return mat.Norm(&d, 2)
}

func referenceSVD(t *testing.T, m *mat.Dense, k int) ([]float64, mat.Matrix) {
	var svd mat.SVD
	require.True(t, svd.Factorize(m, mat.SVDThin))
	var v mat.Dense
	svd.VTo(&v)
	rows, _ := v.Dims()
	return svd.Values(nil)[:k], v.Slice(0, rows, 0, k)
}

func TestLearnTemporalMatchesReferenceSVD(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	cases := []struct {
		name     string
		sigma    []float64
		k        int
		sigmaTol float64 // relative to σ₁
		subTol   float64
	}{
		{"random", []float64{9, 7, 5, 3, 2, 1.5, 1, 0.8, 0.5, 0.3}, 4, 1e-5, 1e-4},
		{"ill-conditioned", []float64{1, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7}, 3, 1e-5, 1e-3},
		{"single direction", []float64{3}, 1, 1e-5, 1e-5},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n, p := 12, 300
			stack := stackWithSpectrum(rng, n, p, tc.sigma)
			got := learn(t, toFloat32(stack), TemporalOptions{Rank: tc.k})
			// Reference from the float32-rounded input, so both see the same data.
			rounded := mat.NewDense(n, p, nil)
			for i := range n {
				for j := range p {
					rounded.Set(i, j, float64(float32(stack.At(i, j))))
				}
			}
			wantSigma, wantV := referenceSVD(t, rounded, tc.k)
			require.True(t, got.valid)
			require.Equal(t, tc.k, got.rank)
			for i := range tc.k {
				require.InDelta(t, wantSigma[i], got.sigma[i], tc.sigmaTol*wantSigma[0], "σ_%d", i)
			}
			require.Less(t, projectorDistance(wantV, got.basis), tc.subTol, "subspace differs from the reference")
			require.Less(t, got.orthoErrMax, 1e-5, "basis not orthonormal in float32")
			var energyKept, energy float64
			for i, s := range tc.sigma {
				energy += s * s
				if i < tc.k {
					energyKept += s * s
				}
			}
			require.InDelta(t, energyKept/energy, got.explained, 1e-5)
		})
	}
}

func TestLearnTemporalDegenerateInput(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	n, p := 10, 50

	t.Run("rank-deficient stack", func(t *testing.T) {
		// 3 directions in the stack, 6 asked for: 3 usable columns, the rest zero, no NaN.
		stack := stackWithSpectrum(rng, n, p, []float64{4, 2, 1})
		got := learn(t, toFloat32(stack), TemporalOptions{Rank: 6})
		require.True(t, got.valid)
		require.Equal(t, 3, got.rank)
		require.Less(t, got.orthoErrMax, 1e-5)
		_, wantV := referenceSVD(t, stack, 3)
		require.Less(t, projectorDistance(wantV, got.basis), 1e-4)
		require.InDelta(t, 1.0, got.explained, 1e-5)
	})

	t.Run("zero stack", func(t *testing.T) {
		got := learn(t, toFloat32(mat.NewDense(n, p, nil)), TemporalOptions{Rank: 2})
		require.False(t, got.valid)
		require.Equal(t, 0, got.rank)
		require.Zero(t, mat.Norm(got.basis, 1))
	})

	t.Run("non-finite stack", func(t *testing.T) {
		stack := stackWithSpectrum(rng, n, p, []float64{4, 2, 1})
		stack.Set(2, 7, math.NaN())
		stack.Set(5, 1, math.Inf(1))
		got := learn(t, toFloat32(stack), TemporalOptions{Rank: 2})
		require.False(t, got.valid, "a stack with NaN/Inf must be reported invalid")
		require.Zero(t, mat.Norm(got.basis, 1))
	})

	t.Run("variance threshold picks the rank", func(t *testing.T) {
		// Energies 16, 4, 1, 0.25 (total 21.25): 0.9 needs 2 directions (94.1%), 0.97 needs 3.
		stack := stackWithSpectrum(rng, n, p, []float64{4, 2, 1, 0.5})
		for _, tc := range []struct {
			threshold float64
			rank      int
		}{{0.5, 1}, {0.9, 2}, {0.97, 3}, {1, 4}} {
			got := learn(t, toFloat32(stack), TemporalOptions{Rank: 4, VarianceThreshold: tc.threshold})
			require.Equal(t, tc.rank, got.rank, "threshold %g", tc.threshold)
			require.GreaterOrEqual(t, got.explained, tc.threshold-1e-6)
			require.Less(t, got.orthoErrMax, 1e-5)
		}
	})
}

func TestCheckTemporalErrors(t *testing.T) {
	for _, tc := range []struct {
		n, p int
		opts TemporalOptions
		want string
	}{
		{10, 50, TemporalOptions{Rank: 0}, "rank 0 is impossible"},
		{10, 50, TemporalOptions{Rank: 11}, "exceeds the 10 gradient snapshots"},
		{10, 5, TemporalOptions{Rank: 6}, "exceeds the variable's 5 elements"},
		{10, 50, TemporalOptions{Rank: 2, VarianceThreshold: 1.5}, "outside [0, 1]"},
	} {
		err := CheckTemporal(tc.n, tc.p, tc.opts)
		require.ErrorContains(t, err, tc.want)
	}
	require.NoError(t, CheckTemporal(10, 50, TemporalOptions{Rank: 10}))
	// The graph function reports the same error instead of building a broken basis.
	_, err := ExecOnceN(testBackend(t), func(s *Node) []*Node {
		return []*Node{LearnTemporal(s, TemporalOptions{Rank: 5}).Basis}
	}, tensors.FromFlatDataAndDimensions(make([]float32, 3*8), 3, 8))
	require.ErrorContains(t, err, "exceeds the 3 gradient snapshots")
}

func TestProjectionAndResidual(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	p, k := 40, 3
	stack := stackWithSpectrum(rng, 6, p, []float64{3, 2, 1})
	inSpan := make([]float32, p) // a combination of the stack's rows: lies in the subspace
	outside := make([]float32, p)
	for j := range p {
		inSpan[j] = float32(stack.At(0, j) - 2*stack.At(3, j))
		outside[j] = float32(rng.NormFloat64())
	}
	outs, err := ExecOnceN(testBackend(t), func(s, a, b *Node) []*Node {
		v := LearnTemporal(s, TemporalOptions{Rank: k}).Basis
		pb := Project(v, b)
		return []*Node{
			RelativeResidual(v, a), RelativeResidual(v, b), RelativeResidual(v, ZerosLike(b)),
			RelativeResidual(v, pb), // a projection lies in the subspace
			ReduceAllMax(Abs(Sub(Project(v, pb), pb))),
		}
	}, toFloat32(stack), tensors.FromValue(inSpan), tensors.FromValue(outside))
	require.NoError(t, err)
	require.Less(t, outs[0].Value().(float32), float32(1e-5))
	require.Greater(t, outs[1].Value().(float32), float32(0.5), "a random vector is mostly outside a 3-d subspace of R^40")
	require.Equal(t, float32(0), outs[2].Value().(float32))
	require.Less(t, outs[3].Value().(float32), float32(1e-5))
	require.Less(t, outs[4].Value().(float32), float32(1e-6), "projection must be idempotent")
}
