//go:build !noxla

package backends

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/gomlx/compute"
	"github.com/gomlx/go-xla/compute/xla"
)

// newXLA creates an XLA backend, after checking that its PJRT plugin is there.
func newXLA(config, options string) (compute.Backend, error) {
	if err := checkPlugin(config, options); err != nil {
		return nil, err
	}
	return xla.New(options)
}

// checkPlugin reports, before XLA is touched, that the requested PJRT plugin is missing.
func checkPlugin(config, options string) error {
	plugin, _, _ := strings.Cut(options, ",")
	if filepath.IsAbs(plugin) {
		if _, err := os.Stat(plugin); err != nil {
			return fmt.Errorf("backend %q: the PJRT plugin file %s cannot be read: %v", config, plugin, err)
		}
		return nil
	}
	available := xla.GetAvailablePlugins()
	if plugin == "" && len(available) > 0 {
		return nil
	}
	for _, p := range available {
		if p == plugin || strings.HasPrefix(p, plugin+"_") {
			return nil
		}
	}
	want := "a PJRT plugin"
	if plugin != "" {
		want = fmt.Sprintf("the %q PJRT plugin", plugin)
	}
	searched := "PJRT_PLUGIN_LIBRARY_PATH (unset), /usr/local/lib/go-xla, $HOME/.local/lib/go-xla, and the directories of LD_LIBRARY_PATH and /etc/ld.so.conf"
	if p := os.Getenv("PJRT_PLUGIN_LIBRARY_PATH"); p != "" {
		searched = fmt.Sprintf("PJRT_PLUGIN_LIBRARY_PATH=%s", p)
	}
	found := "none"
	if len(available) > 0 {
		found = strings.Join(slices.Clone(available), ", ")
	}
	return fmt.Errorf("backend %q needs %s, and none was found.\n"+
		"  searched: %s\n"+
		"  plugins found: %s\n"+
		"  to use XLA: install a PJRT plugin (pjrt_c_api_<name>_plugin.so; e.g. JAX's jax-cuda13-pjrt package carries the CUDA one) and set PJRT_PLUGIN_LIBRARY_PATH to its directory, or name the file: %s=xla:/abs/path/to/pjrt_c_api_cpu_plugin.so\n"+
		"  to fall back: unset %s, or pass -backend go (the embedded pure-Go backend, nothing to install)",
		config, want, searched, found, EnvVar, EnvVar)
}
