package backends

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestConfigPrecedence(t *testing.T) {
	t.Setenv(EnvVar, "")
	require.Equal(t, "go", Config(""))
	t.Setenv(EnvVar, "xla:cpu")
	require.Equal(t, "xla:cpu", Config(""))
	require.Equal(t, "go", Config("go"))
}

func TestNew(t *testing.T) {
	b, err := New("go")
	require.NoError(t, err)
	require.Contains(t, b.Name(), "Go")

	_, err = New("tpu-magic")
	require.ErrorContains(t, err, `unknown backend "tpu-magic"`)

	_, err = New("xla:/no/such/plugin.so")
	require.ErrorContains(t, err, "cannot be read")
}

func TestMissingPluginIsAClearError(t *testing.T) {
	t.Setenv("PJRT_PLUGIN_LIBRARY_PATH", t.TempDir()) // an empty directory: no plugin to find
	_, err := New("xla:nosuchplugin")
	require.Error(t, err)
	for _, want := range []string{`needs the "nosuchplugin" PJRT plugin`, "searched: PJRT_PLUGIN_LIBRARY_PATH=", "to fall back", "-backend go"} {
		require.ErrorContains(t, err, want)
	}
}
