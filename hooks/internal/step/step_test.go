package step

import (
	"testing"

	"github.com/gomlx/compute"
	"github.com/gradsub/gradsub/internal/backends"
	"github.com/stretchr/testify/require"
)

// testBackend is the backend the tests share (backends.Shared): $GOMLX_BACKEND, or the Go backend.
func testBackend(t testing.TB) compute.Backend {
	b, err := backends.Shared()
	require.NoError(t, err)
	return b
}
