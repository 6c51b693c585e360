package main

import (
	"testing"

	"github.com/gradsub/gradsub/internal/backends"
	"github.com/stretchr/testify/require"
)

func TestAnalyticRatio(t *testing.T) {
	// 784-256-10, batch 256, rank 8, first layer projected: by hand,
	// stock = F + ∂W₁ + ∂W₂ + ∂x₂ and subspace = F + ∂x₂ + ∂W₂ + 2·B·r·(m+n) + 2·r·m·n.
	c := configs[0]
	b, r := 256.0, 8.0
	f := 2 * b * (784*256 + 256*10)
	stock := f + 2*b*784*256 + 2*2*b*256*10
	sub := f + 2*2*b*256*10 + 2*b*r*(784+256) + 2*r*784*256
	require.InDelta(t, sub/stock, analyticRatio(c), 1e-12)
}

func TestSmallRun(t *testing.T) {
	backend, err := backends.New("go")
	require.NoError(t, err)
	c := Config{Name: "tiny", Input: 32, Hidden: []int{24}, Classes: 4, Batch: 16, Rank: 2, Projected: []string{"/layer_0/dense/weights"}}
	for _, feed := range []string{feedDevice, feedHost} {
		r, err := run(backend, c, feed, 2, 3, t.Logf)
		require.NoError(t, err, feed)
		require.Equal(t, feed, r.Feed)
		require.Equal(t, 1, r.DirectPathVariables)
		require.Positive(t, r.StepTimeRatio)
		require.Positive(t, r.BlockRatioMin)
		require.LessOrEqual(t, r.BlockRatioMin, r.BlockRatioMedian)
		require.LessOrEqual(t, r.BlockRatioMedian, r.BlockRatioMax)
		require.Less(t, r.ProjectedGradRatio, 1.0, "the direct path must cut the projected layer's gradient FLOPs")
		require.Less(t, r.StateBytesRatio, 1.0)
		require.Greater(t, r.StockStateBytes, int64(0))
	}
}

func TestUnknownFeed(t *testing.T) {
	backend, err := backends.New("go")
	require.NoError(t, err)
	_, err = run(backend, configs[0], "disk", 1, 1, t.Logf)
	require.ErrorContains(t, err, `unknown -feed "disk"`)
}

func TestSpread(t *testing.T) {
	lo, median, hi := spread([]float64{0.6, 0.5, 0.7})
	require.Equal(t, []float64{0.5, 0.6, 0.7}, []float64{lo, median, hi})
	lo, median, hi = spread([]float64{0.9, 0.5, 0.7, 0.6})
	require.Equal(t, 0.5, lo)
	require.InDelta(t, 0.65, median, 1e-12)
	require.Equal(t, 0.9, hi)
}
