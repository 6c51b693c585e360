//go:build noxla

package backends

import (
	"fmt"

	"github.com/gomlx/compute"
)

// newXLA says that this build left XLA out.
func newXLA(config, _ string) (compute.Backend, error) {
	return nil, fmt.Errorf("backend %q: this program was built with -tags noxla, which leaves the XLA backend out; build it without the tag (it needs a C compiler) or use -backend go", config)
}
