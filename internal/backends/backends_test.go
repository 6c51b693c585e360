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

func TestResolve(t *testing.T) {
	require.Equal(t, "go:ops_sequential", Resolve("go"))
	require.Equal(t, "go:ops_sequential", Resolve(""))
	require.Equal(t, "go:parallelism=2,ops_sequential", Resolve("go:parallelism=2"))
	require.Equal(t, "go:ops_parallel", Resolve("go:ops_parallel"))
	require.Equal(t, "go:num_executors=2", Resolve("go:num_executors=2"))
	require.Equal(t, "xla:cuda,tf32=false", Resolve("xla:cuda,tf32=false"))
}

func TestNew(t *testing.T) {
	b, err := New("go")
	require.NoError(t, err)
	require.Contains(t, b.Name(), "Go")

	_, err = New("tpu-magic")
	require.ErrorContains(t, err, `unknown backend "tpu-magic"`)
}
