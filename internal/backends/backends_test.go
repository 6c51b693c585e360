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
}
