// Package backends picks the GoMLX backend for the project's examples and tests: the embedded Go
// backend by default, XLA (PJRT) when asked for and a plugin is present, and a clear error, never
// a panic or a download, when it is not.
package backends

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/gobackend"
	"github.com/gomlx/go-xla/compute/xla"
)

// EnvVar is GoMLX's backend variable; its value, when set, is the default configuration.
const EnvVar = compute.ConfigEnvVar

// Default is the configuration used when neither a flag nor $GOMLX_BACKEND names one.
const Default = "go"

// GoSafeOptions are added to a Go-backend configuration that sets no scheduling of its own.
// compute v0.1.14's parallel scheduler keeps idle graph executors holding worker-pool slots; an
// If or While branch that runs a large op (which waits for a slot to split its work) can then
// wait forever. The projector's step holds no such branch any more (a user's plain
// compute.MustNew() trains: hooks.TestPlainProgramTrainsInEveryMode), but a model's own control
// flow could. With one executor (ops_sequential) every slot stays free for the ops' own
// parallelism; it was also the fastest setting measured here (784-256-10 Adam step: 5.4 ms
// against 7.5 ms).
const GoSafeOptions = "ops_sequential"

// Config returns the configuration to use: flag if not empty, else $GOMLX_BACKEND, else "go".
func Config(flag string) string {
	if flag != "" {
		return flag
	}
	if env := os.Getenv(EnvVar); env != "" {
		return env
	}
	return Default
}

// New creates the backend for a configuration "name[:options]": "go" (the pure-Go backend),
// or "xla:cpu", "xla:cuda", "xla:/abs/path/plugin.so" (XLA through a PJRT plugin).
func New(config string) (compute.Backend, error) {
	name, options, _ := strings.Cut(config, ":")
	switch name {
	case "go", "":
		if !strings.Contains(options, "ops_") && !strings.Contains(options, "num_executors") {
			options = strings.TrimPrefix(options+","+GoSafeOptions, ",")
		}
		return gobackend.New(options)
	case "xla", "stablehlo", "hlo", "shlo":
		if err := checkPlugin(config, options); err != nil {
			return nil, err
		}
		return xla.New(options)
	}
	return nil, fmt.Errorf("unknown backend %q in %q: use \"go\" (the embedded pure-Go backend), or \"xla:cpu\" / \"xla:cuda\" (XLA through a PJRT plugin)", name, config)
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
