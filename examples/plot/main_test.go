package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/gradsub/gradsub/hooks"
	"github.com/gradsub/gradsub/internal/figures"
	"github.com/stretchr/testify/require"
)

// TestDrawsEachFigure: a directory's controller*.json become PNGs beside them; a directory
// without any is an error that says how to make them.
func TestDrawsEachFigure(t *testing.T) {
	dir := t.TempDir()
	fig := figures.Controller{Title: "test", Threshold: 0.5, Series: []figures.Series{{Name: "a", Loss: []float64{3, 2, 1, 0.5},
		History: []hooks.Sample{{Step: 2, Checked: true, Residual: 0.4, MeanRank: 4}, {Step: 4, Checked: true, Learned: true, Residual: 0.6, MeanRank: 4}}}}}
	require.NoError(t, fig.Write(filepath.Join(dir, "controller-x.json")))
	require.NoError(t, run([]string{dir}))
	info, err := os.Stat(filepath.Join(dir, "controller-x.png"))
	require.NoError(t, err)
	require.Positive(t, info.Size())

	front := figures.Frontier{Title: "test"}
	front.Add("a", figures.FrontierPoint{Rank: 8, StepRatio: 0.6, LossRatio: 1.1})
	front.Add("a", figures.FrontierPoint{Rank: 16, StepRatio: 0.7, LossRatio: 1.0})
	require.NoError(t, front.Write(filepath.Join(dir, "frontier.json")))
	require.NoError(t, run([]string{dir}))
	info, err = os.Stat(filepath.Join(dir, "frontier.png"))
	require.NoError(t, err)
	require.Positive(t, info.Size())

	require.ErrorContains(t, run([]string{t.TempDir()}), "run an example with -out")
}
