// Package backends picks the GoMLX backend for the project's examples and tests: the embedded Go
// backend by default, XLA (PJRT) when asked for and a plugin is present, and a clear error, never
// a panic or a download, when it is not.
//
// Built with GoMLX's tag noxla (go run -tags noxla ...), XLA is left out, as GoMLX's
// backends/default leaves it out: no cgo, no C compiler, a third less to compile; asking for it
// then says so.
package backends

import (
	"fmt"
	"os"
	"strings"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/gobackend"
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
		return newXLA(config, options)
	}
	return nil, fmt.Errorf("unknown backend %q in %q: use \"go\" (the embedded pure-Go backend), or \"xla:cpu\" / \"xla:cuda\" (XLA through a PJRT plugin)", name, config)
}
