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
