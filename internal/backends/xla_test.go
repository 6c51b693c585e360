//go:build !noxla

package backends

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestMissingPluginFileIsAnError(t *testing.T) {
	_, err := New("xla:/no/such/plugin.so")
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
