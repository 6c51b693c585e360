package backends

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/cpu"
)

func TestCPUModel(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cpuinfo")
	require.NoError(t, os.WriteFile(path, []byte("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9J14 96-Core Processor\nprocessor\t: 1\nmodel name\t: AMD EPYC 9J14 96-Core Processor\n"), 0o600))
	require.Equal(t, "AMD EPYC 9J14 96-Core Processor", cpuModel(path))
	require.NoError(t, os.WriteFile(path, []byte("processor\t: 0\nmodel name\t:\n"), 0o600))
	require.Equal(t, "unknown CPU", cpuModel(path), "an empty model name")
	require.Equal(t, "unknown CPU", cpuModel(filepath.Join(dir, "absent")))
	m := Machine()
	require.True(t, strings.HasSuffix(m, runtime.GOOS+"/"+runtime.GOARCH), m)
	require.Contains(t, m, " CPUs, ")
	if cpu.X86.HasAVX2 {
		require.Contains(t, m, "(AVX", "the vector width the Go backend's kernels use is named: %s", m)
	}
}
