package transformer

import (
	"fmt"
	"hash/fnv"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"github.com/gomlx/gomlx/core/tensors"
)

// Corpus is the byte stream of a set of text files, split by file into train and eval parts.
type Corpus struct {
	Train, Eval []byte
	Files       int // files read
	EvalFiles   int
}

// EvalShare of the files (by a hash of their path, so the split is deterministic and stable when
// files are added) goes to evaluation.
const EvalShare = 20 // one file in 20

// LoadCorpus reads the files under the given roots (files or directories, walked in sorted
// order) whose name ends with one of the extensions (all files if none), up to maxBytes in all
// (0: no limit). A file goes to eval if the FNV hash of its path relative to its root is 0 mod
// EvalShare. Errors name the path and what to do.
func LoadCorpus(roots []string, extensions []string, maxBytes int) (*Corpus, error) {
	if len(roots) == 0 {
		return nil, fmt.Errorf("transformer: no corpus path given")
	}
	c := &Corpus{}
	for _, root := range roots {
		info, err := os.Stat(root)
		if err != nil {
			return nil, fmt.Errorf("transformer: corpus path %s: %w (name existing text files or directories)", root, err)
		}
		var paths []string
		if info.IsDir() {
			err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				if d.Type().IsRegular() && hasExtension(path, extensions) {
					paths = append(paths, path)
				}
				return nil
			})
			if err != nil {
				return nil, fmt.Errorf("transformer: reading corpus directory %s: %w", root, err)
			}
		} else {
			paths = []string{root}
		}
		sort.Strings(paths)
		for _, p := range paths {
			if maxBytes > 0 && len(c.Train)+len(c.Eval) >= maxBytes {
				break
			}
			content, err := os.ReadFile(p)
			if err != nil {
				return nil, fmt.Errorf("transformer: reading corpus file %s: %w", p, err)
			}
			if room := maxBytes - len(c.Train) - len(c.Eval); maxBytes > 0 && len(content) > room {
				content = content[:room]
			}
			rel, _ := filepath.Rel(root, p)
			h := fnv.New32a()
			h.Write([]byte(rel))
			c.Files++
			if h.Sum32()%EvalShare == 0 {
				c.Eval = append(c.Eval, content...)
				c.EvalFiles++
			} else {
				c.Train = append(c.Train, content...)
			}
		}
	}
	return c, nil
}

func hasExtension(path string, extensions []string) bool {
	if len(extensions) == 0 {
		return true
	}
	for _, e := range extensions {
		if strings.HasSuffix(path, e) {
			return true
		}
	}
	return false
}

// GoSource returns the Go standard library's source directory, present wherever Go programs
// build: $(go env GOROOT)/src.
func GoSource(goroot string) string { return filepath.Join(goroot, "src") }

// GoRoot asks the go command on PATH for its GOROOT (the toolchain's, with GOTOOLCHAIN=auto),
// falling back to the root this binary was built with.
func GoRoot() string {
	if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
		if root := strings.TrimSpace(string(out)); root != "" {
			return root
		}
	}
	//lint:ignore SA1019 the build-time root is the fallback when no go command is on PATH
	return runtime.GOROOT()
}

// UnigramEntropy is the entropy (nats per byte) of the byte frequencies of data: the loss of the
// best model that ignores context.
func UnigramEntropy(data []byte) float64 {
	var counts [256]float64
	for _, b := range data {
		counts[b]++
	}
	var h float64
	n := float64(len(data))
	for _, c := range counts {
		if c > 0 {
			p := c / n
			h -= p * math.Log(p)
		}
	}
	return h
}

// Batches draws windows of seqLen+1 bytes: inputs are the first seqLen, labels the next byte at
// each position. It is deterministic for a seed.
type Batches struct {
	data          []byte
	batch, seqLen int
	rng           *rand.Rand
}

// NewBatches returns a batch source over data; it errors if data is shorter than one window.
func NewBatches(data []byte, batch, seqLen int, seed uint64) (*Batches, error) {
	if len(data) < seqLen+2 {
		return nil, fmt.Errorf("transformer: corpus part of %d bytes is shorter than one sequence of %d: give more text or a shorter -seq", len(data), seqLen+1)
	}
	return &Batches{data: data, batch: batch, seqLen: seqLen, rng: rand.New(rand.NewPCG(seed, 0x7a))}, nil
}

// Next returns inputs [batch, seqLen] and labels [batch, seqLen, 1] (int32), fresh tensors.
func (b *Batches) Next() (inputs, labels *tensors.Tensor) {
	in := make([]int32, 0, b.batch*b.seqLen)
	lab := make([]int32, 0, b.batch*b.seqLen)
	for range b.batch {
		start := b.rng.IntN(len(b.data) - b.seqLen - 1)
		for i := range b.seqLen {
			in = append(in, int32(b.data[start+i]))
			lab = append(lab, int32(b.data[start+i+1]))
		}
	}
	return tensors.FromFlatDataAndDimensions(in, b.batch, b.seqLen), tensors.FromFlatDataAndDimensions(lab, b.batch, b.seqLen, 1)
}
