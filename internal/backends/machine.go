package backends

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strings"

	"golang.org/x/sys/cpu"
)

// Machine describes the CPU the examples' timings ran on, for their output: step-time ratios
// differ by CPU (the 784-256-10 benchmark: 0.55–0.58 of stock's step on a 2-core AMD EPYC, 0.69
// on a 2-core Intel Xeon), so a figure means little without it.
//
// The widest vector instructions are named too: the Go backend picks its kernels by them, and the
// same CPU model name comes with AVX-512 on one virtual machine and without it on another (the
// transformer's step ratio: 0.66 with AVX-512, 0.88 with AVX2; docs/benchmarks.md).
func Machine() string {
	return fmt.Sprintf("%s%s, %d CPUs, %s/%s", cpuModel("/proc/cpuinfo"), vectorISA(), runtime.NumCPU(), runtime.GOOS, runtime.GOARCH)
}

// vectorISA is " (AVX-512)", " (AVX2)" or "" on x86 (the Go backend's SIMD kernels come in those
// two widths), " (NEON)" on arm64.
func vectorISA() string {
	switch {
	case cpu.X86.HasAVX512F:
		return " (AVX-512)"
	case cpu.X86.HasAVX2:
		return " (AVX2)"
	case cpu.ARM64.HasASIMD:
		return " (NEON)"
	}
	return ""
}

// cpuModel reads the first "model name" of a /proc/cpuinfo-formatted file, or says it is unknown.
func cpuModel(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return "unknown CPU"
	}
	defer f.Close()
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		key, value, ok := strings.Cut(scanner.Text(), ":")
		if ok && strings.TrimSpace(key) == "model name" {
			if v := strings.TrimSpace(value); v != "" {
				return v
			}
		}
	}
	return "unknown CPU"
}
