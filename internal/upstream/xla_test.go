//go:build !noxla

package upstream

import (
	"reflect"
	"testing"

	"github.com/gomlx/go-xla/compute/xla"
	"github.com/stretchr/testify/require"
)

// TestXLABuilderCachesAreFound: the fields IsolateFunctionCaches swaps out must exist, as maps,
// in the go-xla version this module builds with (a new version without them needs the
// workaround reviewed).
func TestXLABuilderCachesAreFound(t *testing.T) {
	builder := reflect.TypeFor[xla.Builder]()
	for _, name := range xlaCacheFields {
		f, ok := builder.FieldByName(name)
		require.True(t, ok, "go-xla's Builder has no field %s", name)
		require.Equal(t, reflect.Map, f.Type.Kind(), name)
	}
}
