//go:build noxla

package backends

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestXLALeftOutSaysSo: built with -tags noxla, asking for XLA names the tag and the way back.
func TestXLALeftOutSaysSo(t *testing.T) {
	_, err := New("xla:cpu")
	for _, want := range []string{"-tags noxla", "-backend go"} {
		require.ErrorContains(t, err, want)
	}
}
