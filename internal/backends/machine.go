package backends

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strings"
)

// Machine describes the CPU the examples' timings ran on, for their output: step-time ratios
// differ by CPU (the 784-256-10 benchmark: 0.55–0.58 of stock's step on a 2-core AMD EPYC, 0.69
// on a 2-core Intel Xeon), so a figure means little without it.
func Machine() string {
	return fmt.Sprintf("%s, %d CPUs, %s/%s", cpuModel("/proc/cpuinfo"), runtime.NumCPU(), runtime.GOOS, runtime.GOARCH)
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
