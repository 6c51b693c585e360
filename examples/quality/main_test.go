package main

import (
	"testing"

	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gradsub/gradsub/hooks"
	"github.com/gradsub/gradsub/internal/quality"
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

// TestProjectorOptions: -project reaches matrix mode (a bad pattern fails its validation) and
// never the one option, which keeps its own selection; -scale, -complement and -scale-adaptation
// reach both.
func TestProjectorOptions(t *testing.T) {
	adam := optimizer.Adam().Done()
	flags := func(scale float64, project string) projectorFlags {
		return projectorFlags{scale, project, hooks.AutoComplement, hooks.DefaultComplementScale, hooks.DefaultScaleAdaptation}
	}
	require.Nil(t, projectorOptions(quality.Default, flags(1, "(")), "the one option chooses its own variables")
	require.Nil(t, projectorOptions(quality.Matrix, flags(1, "")))
	matrix := projectorOptions(quality.Matrix, flags(1, "("))
	require.NotNil(t, matrix)
	require.ErrorContains(t, matrix(hooks.Subspace(adam)).Validate(), "(", "the pattern reaches matrix mode")
	require.NoError(t, projectorOptions(quality.Matrix, flags(1, `^/conv_\d/`))(hooks.Subspace(adam)).Validate())
	require.NotNil(t, projectorOptions(quality.Default, flags(2, `^/conv_\d/`)), "the scale reaches the one option")
	off := projectorOptions(quality.Default, projectorFlags{1, "", -2, 1, hooks.DefaultScaleAdaptation})
	require.NotNil(t, off, "-complement reaches the one option")
	require.ErrorContains(t, off(hooks.Subspace(adam)).Validate(), "Complement(-2)")
	require.Nil(t, projectorOptions(quality.Plain, projectorFlags{1, "", 8, 1, 0.5}), "plain is the step without the complement and the step-length rule")
	still := projectorOptions(quality.Matrix, projectorFlags{1, "", hooks.AutoComplement, hooks.DefaultComplementScale, -1})
	require.NotNil(t, still, "-scale-adaptation reaches matrix mode")
	require.ErrorContains(t, still(hooks.Subspace(adam)).Validate(), "ScaleAdaptation(-1)")
	require.NotNil(t, projectorOptions(quality.Plain, flags(1, "^/x$")), "-project reaches plain")
}
