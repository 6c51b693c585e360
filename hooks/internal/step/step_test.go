package step

import (
	"sync"
	"testing"

	"github.com/gomlx/compute"
	"github.com/gradsub/gradsub/internal/backends"
	"github.com/stretchr/testify/require"
)

var (
	backendOnce   sync.Once
	sharedBackend compute.Backend
)

// testBackend is the backend shared by the package's tests: $GOMLX_BACKEND (e.g. xla:cuda), or
// the Go backend when it is unset.
func testBackend(t testing.TB) compute.Backend {
	t.Helper()
	backendOnce.Do(func() {
		b, err := backends.New(backends.Config(""))
		require.NoError(t, err)
		sharedBackend = b
	})
	return sharedBackend
}
