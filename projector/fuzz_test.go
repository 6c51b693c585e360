package projector

import (
	"encoding/binary"
	"math"
	"sync"
	"testing"

	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
)

// floatsFrom reads n float32 values from data (little-endian, zero-padded): any bit pattern,
// NaN, Inf, denormals and huge values included.
func floatsFrom(data []byte, n int) []float32 {
	out := make([]float32, n)
	for i := range out {
		var word [4]byte
		copy(word[:], data[min(len(data), 4*i):min(len(data), 4*i+4)])
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(word[:]))
	}
	return out
}

var (
	fuzzExecOnce             sync.Once
	temporalExec, matrixExec *Exec
)

func fuzzExecs(t *testing.T) {
	fuzzExecOnce.Do(func() {
		b := testBackend(t)
		temporalExec = MustNewExec(b, func(s *Node) []*Node {
			tb := LearnTemporal(s, TemporalOptions{Rank: 3, VarianceThreshold: 0.9})
			return []*Node{tb.Basis, tb.Valid, tb.Rank, OrthonormalityError(tb.Basis), tb.ExplainedVariance}
		})
		matrixExec = MustNewExec(b, func(gr, prev *Node) []*Node {
			omega := ConstAsDType(gr.Graph(), gr.DType(), Sketch(5, DefaultSketchColumns))
			p := FullTrackingProducts(gr, ProjectMatrix(gr, prev, Left), omega, Left)
			next := TrackBasis(prev, p.Power, Scalar(gr.Graph(), gr.DType(), 4), 4)
			return []*Node{next, OrthonormalityError(next), SketchResidual(prev, p.Sketch), p.Sketch}
		})
	})
}

// allFinite reports whether every value of a float32 tensor is finite.
func allFinite(t *tensors.Tensor) bool {
	for _, x := range tensors.MustCopyFlatData[float32](t) {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return false
		}
	}
	return true
}

// FuzzLearnTemporal: whatever the stack holds, the basis is finite, and orthonormal (on its
// non-zero columns) when valid; a stack with a non-finite value is invalid.
func FuzzLearnTemporal(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64})                           // 1, 2, 3
	f.Add([]byte{0, 0, 192, 127, 0, 0, 128, 63})                                      // NaN, 1
	f.Add([]byte{255, 255, 127, 127, 255, 255, 127, 255, 1, 0, 0, 0, 0, 0, 128, 127}) // ±max, denormal, +Inf
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzExecs(t)
		values := floatsFrom(data, 5*8)
		outs, err := temporalExec.Call(tensors.FromFlatDataAndDimensions(values, 5, 8))
		if err != nil {
			t.Fatal(err)
		}
		if !allFinite(outs[0]) {
			t.Fatalf("basis has non-finite values for stack %v", values)
		}
		hasNonFinite := !allFinite(tensors.FromFlatDataAndDimensions(values, 5, 8))
		valid := outs[1].Value().(bool)
		if hasNonFinite && valid {
			t.Fatal("a stack with NaN or Inf must be reported invalid")
		}
		if valid && outs[3].Value().(float32) > 1e-4 {
			t.Fatalf("basis not orthonormal: ‖QᵀQ−I‖ = %g", outs[3].Value())
		}
		if r := outs[2].Value().(int32); r < 0 || r > 3 {
			t.Fatalf("rank %d outside [0, 3]", r)
		}
		if e := outs[4].Value().(float32); e < 0 || e > 1+1e-5 || math.IsNaN(float64(e)) {
			t.Fatalf("explained variance %g outside [0, 1]", e)
		}
	})
}

// FuzzTrackBasis: whatever the gradient holds (NaN, Inf, denormals, values near float32's
// largest), a tracked basis stays finite and orthonormal, and the residual is in [0, 1]
// wherever the sketch it comes from is finite.
func FuzzTrackBasis(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64})
	f.Add([]byte{0, 0, 192, 127, 0, 0, 128, 63})
	f.Add([]byte{255, 255, 127, 127, 255, 255, 127, 255, 255, 255, 127, 127, 1, 0, 0, 0})
	full := make([]byte, 125) // 125 mod 6 = 5 columns: a gradient of full rank
	for i := range full {
		full[i] = byte(37*i + 11)
	}
	f.Add(full)
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzExecs(t)
		values := floatsFrom(data, 6*5)
		// The gradient's rank, at most its number of non-zero columns, is the fuzzer's to choose
		// (the input's length mod 6): 0 or 1 is below the basis's rank 2, whose directions the
		// gradient does not span must stay orthonormal.
		for i := range values {
			if i%5 >= len(data)%6 {
				values[i] = 0
			}
		}
		prev := []float32{1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0} // [6, 2], orthonormal
		outs, err := matrixExec.Call(tensors.FromFlatDataAndDimensions(values, 6, 5), tensors.FromFlatDataAndDimensions(prev, 6, 2))
		if err != nil {
			t.Fatal(err)
		}
		if !allFinite(outs[0]) {
			t.Fatalf("basis has non-finite values for gradient %v", values)
		}
		if outs[1].Value().(float32) > 1e-4 {
			t.Fatalf("basis not orthonormal: ‖QᵀQ−I‖ = %g", outs[1].Value())
		}
		if e := outs[2].Value().(float32); allFinite(outs[3]) && (e < 0 || e > 1+1e-4 || math.IsNaN(float64(e))) {
			t.Fatalf("residual %g outside [0, 1] for a finite sketch", e)
		}
	})
}
