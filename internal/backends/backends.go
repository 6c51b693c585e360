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
	"sync"

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
// parallelism; it was also the faster setting for both variants of the 784-256-10 MLP (Adam
// step: 2.8 against 3.7 ms, 2026-12-02), though not for the transformer's projected step.
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

// Resolve returns the configuration New creates for config: a Go-backend configuration that sets
// no scheduling of its own gets GoSafeOptions. The examples print it beside their timings: step
// time ratios depend on the executor (docs/benchmarks.md), and "go" alone is not what a plain
// compute.MustNew() program runs ("go:ops_parallel" is, for a lone training loop).
func Resolve(config string) string {
	name, options, _ := strings.Cut(config, ":")
	if name != "go" && name != "" {
		return config
	}
	if !strings.Contains(options, "ops_") && !strings.Contains(options, "num_executors") {
		options = strings.TrimPrefix(options+","+GoSafeOptions, ",")
	}
	return "go:" + options
}

// New creates the backend for a configuration "name[:options]": "go" (the pure-Go backend),
// or "xla:cpu", "xla:cuda", "xla:/abs/path/plugin.so" (XLA through a PJRT plugin).
func New(config string) (compute.Backend, error) {
	name, options, _ := strings.Cut(Resolve(config), ":")
	switch name {
	case "go":
		return gobackend.New(options)
	case "xla", "stablehlo", "hlo", "shlo":
		return newXLA(config, options)
	}
	return nil, fmt.Errorf("unknown backend %q in %q: use \"go\" (the embedded pure-Go backend), or \"xla:cpu\" / \"xla:cuda\" (XLA through a PJRT plugin)", name, config)
}

var (
	sharedOnce    sync.Once
	sharedBackend compute.Backend
	sharedErr     error
)

// Shared is one backend per process, of $GOMLX_BACKEND (Config("")) or the Go backend when it is
// unset, made on the first call: what the packages' tests share (a backend holds compiled graphs
// and, on a GPU, its device).
func Shared() (compute.Backend, error) {
	sharedOnce.Do(func() { sharedBackend, sharedErr = New(Config("")) })
	return sharedBackend, sharedErr
}
