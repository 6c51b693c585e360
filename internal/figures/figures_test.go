package figures

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/gradsub/gradsub/hooks"
	"github.com/stretchr/testify/require"
)

func TestWriteRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f.json")
	want := Controller{Title: "t", Threshold: 0.5, Series: []Series{{Name: "a", Loss: []float64{1, 0.5},
		History: []hooks.Sample{{Step: 2, Checked: true, Learned: true, Residual: 0.3, MeanRank: 4, Curvature: 1.5}}}}}
	require.NoError(t, want.Write(path))
	got, err := Read(path)
	require.NoError(t, err)
	require.Equal(t, want, got)

	require.NoError(t, os.WriteFile(path, []byte(`{"title":"empty"}`), 0o644))
	_, err = Read(path)
	require.ErrorContains(t, err, "no series")
	require.NoError(t, os.WriteFile(path, []byte(`not json`), 0o644))
	_, err = Read(path)
	require.ErrorContains(t, err, "not a controller figure")
}

// TestParseRanks: a list of ranks at or above the least, or the fallback alone; a bad entry is
// an error naming it and the least.
func TestParseRanks(t *testing.T) {
	ranks, err := ParseRanks(" 8, 16 ,32", 0, 1)
	require.NoError(t, err)
	require.Equal(t, []int{8, 16, 32}, ranks)
	ranks, err = ParseRanks("", 48, 1)
	require.NoError(t, err)
	require.Equal(t, []int{48}, ranks)
	_, err = ParseRanks("8,0", 0, 1)
	require.ErrorContains(t, err, `"0" is not a rank ≥ 1`)
	_, err = ParseRanks("8,x", 0, 0)
	require.ErrorContains(t, err, `"x" is not a rank ≥ 0`)
}

// TestFrontierTableAndData: points join their series in first-seen order, the table has a row
// per rank and a column pair per series (a dash where a series lacks the rank), and the data
// round-trips through its JSON.
func TestFrontierTableAndData(t *testing.T) {
	var f Frontier
	f.Add("a", FrontierPoint{Rank: 16, StepRatio: 0.7, LossRatio: 0.98})
	f.Add("b", FrontierPoint{Rank: 8, StepRatio: 1.1, LossRatio: 1.1})
	f.Add("a", FrontierPoint{Rank: 8, StepRatio: 0.6, LossRatio: 1.0})
	require.Len(t, f.Series, 2)
	table := f.Table()
	require.Contains(t, table, "| 8 | 1.000 | 0.60 | 1.100 | 1.10 |", "loss, then step time, per series")
	require.Contains(t, table, "| 16 | 0.980 | 0.70 | — | — |")
	path := filepath.Join(t.TempDir(), "frontier.json")
	require.NoError(t, f.Write(path))
	back, err := ReadFrontier(path)
	require.NoError(t, err)
	require.Equal(t, f, back)
	require.NoError(t, os.WriteFile(path, []byte(`{"series":[]}`), 0o644))
	_, err = ReadFrontier(path)
	require.ErrorContains(t, err, "no series")
}
