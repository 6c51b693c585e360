package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseRates(t *testing.T) {
	rates, err := parseRates("")
	require.NoError(t, err)
	require.Equal(t, []float64{0}, rates, "empty: each task's own rate")
	rates, err = parseRates("3e-3, 0.006,1e-2")
	require.NoError(t, err)
	require.Equal(t, []float64{3e-3, 6e-3, 1e-2}, rates)
	for _, bad := range []string{"0", "-1e-3", "fast", "3e-3,,1e-2", "inf", "NaN"} {
		_, err := parseRates(bad)
		require.Error(t, err, "-lr %q", bad)
		require.Contains(t, err.Error(), "positive learning rate")
	}
}
