package hooks

import (
	"encoding/binary"
	"maps"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gradsub/gradsub/hooks/internal/step"
	"github.com/stretchr/testify/require"
)

// FuzzValidate: whatever numbers a user passes (NaN, ±Inf, negative, huge), Validate returns an
// error or accepts a configuration whose numbers are all finite and in range (rank 0 is the
// automatic rank); it never panics.
func FuzzValidate(f *testing.F) {
	f.Add(4, 0, 0.0, 0.5, 1.0, 4.0, 100.0, 0.0, 1.0)
	f.Add(0, 7, math.NaN(), math.Inf(1), -1.0, 0.0, 0.5, 1e30, math.NaN())
	f.Add(8, 1, 0.01, 0.2, 0.0, 64.0, 0.0, 0.9, 0.0)
	f.Fuzz(func(t *testing.T, rank, mode int, weightDecay, residual, slow, fast, explode, variance, scale float64) {
		cfg := Subspace(optimizer.Adam().Done()).Rank(rank).Mode(Mode(mode)).WeightDecay(weightDecay).
			ResidualThreshold(residual).TrackingRate(slow, fast).ExplodeFactor(explode).Scale(scale)
		if Mode(mode) == Temporal {
			cfg = cfg.VarianceThreshold(variance).WarmUp(max(rank, 1))
		}
		if err := cfg.Validate(); err != nil {
			return
		}
		p := cfg.DriftPolicy()
		for _, v := range []float64{cfg.weightDecay, cfg.varianceThreshold, p.ResidualThreshold, p.TrackingRate, p.FastTrackingRate, p.ExplodeFactor, cfg.scale} {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				t.Fatalf("accepted a non-finite number: %+v", cfg)
			}
		}
		if rank < 0 || (Mode(mode) != Matrix && Mode(mode) != Temporal) || weightDecay < 0 || weightDecay > 1 ||
			residual <= 0 || residual > 1 || p.TrackingRate < 0 || p.FastTrackingRate < p.TrackingRate ||
			p.FastTrackingRate > MaxTrackingRate || (explode != 0 && explode <= 1) || scale < 0 || (scale == 0 && Mode(mode) == Temporal) {
			t.Fatalf("accepted an out-of-range configuration: rank %d mode %d wd %g residual %g rates %g %g explode %g scale %g", rank, mode, weightDecay, residual, p.TrackingRate, p.FastTrackingRate, explode, scale)
		}
	})
}

// stateFuzz is the run FuzzStepState restores before each input: compiling the step once keeps
// an input to a few milliseconds.
type stateFuzzRun struct {
	run    *run
	opt    *Optimizer
	saved  map[string]*tensors.Tensor
	fuzzed []string // the projector's state: its own variables and the coefficients' moments
}

var stateFuzz [2]*stateFuzzRun // by the input's first byte: matrix or temporal mode

// FuzzStepState: whatever a damaged checkpoint holds in the projector's state — bases that are
// not orthonormal, NaN or huge moments, negative second moments, counters of any value — a few
// steps later every float variable is finite, the basis is orthonormal, a step has been taken
// and none has failed. The input's first byte picks matrix or temporal mode; its bytes are
// written bit for bit, cycling over it, into every state variable.
func FuzzStepState(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 0, 192, 127})                                    // NaN everywhere
	f.Add([]byte{1, 0, 192, 127})                                    // temporal, NaN
	f.Add([]byte{0, 0, 128, 191, 0, 0, 0, 64})                       // -1, 2: negative second moments
	f.Add([]byte{255, 255, 127, 127, 1, 0, 0, 0, 0, 0, 128, 127})    // max, denormal, +Inf
	f.Add([]byte{0, 0, 32, 65, 255, 255, 255, 255, 0, 0, 0, 128, 7}) // 10, -NaN, -0, odd length
	f.Fuzz(func(t *testing.T, data []byte) {
		mode := 0
		if len(data) > 0 {
			mode = int(data[0] % 2)
		}
		s := stateFuzzRunOf(t, mode)
		r := s.run
		s.load(t, data)
		skipped := func() int64 { return r.store.GetVariable("/subspace/skipped_steps").MustValue().Value().(int64) }
		skippedBefore := skipped()
		for range ExplodePatience + 1 {
			r.step(t)
		}
		values := r.snapshot(t)
		for path := range values {
			if strings.HasPrefix(path, "/metrics/") {
				delete(values, path) // the trainer's smoothed loss: one non-finite loss stays in it
			}
			// The temporal ring buffer repairs itself as steps overwrite its rows (a stack with a
			// non-finite row is not learned from); checking it every step would cost a pass
			// over WarmUp copies of the weight.
			if strings.HasSuffix(path, "_snapshots") {
				delete(values, path)
			}
		}
		requireFinite(t, values)
		// No state locks training: of ExplodePatience+1 steps, one is taken. (A loaded second
		// moment near float32's largest makes the steps taken tiny, as it would for stock Adam.)
		require.LessOrEqual(t, skipped()-skippedBefore, int64(ExplodePatience), "steps skipped in a row after loading the state")
		// A basis within BasisTolerance is kept as loaded; one further off is replaced.
		require.Less(t, basisOrthonormalityError(t, r.store, "/subspace/hidden/dense/weights_basis"), BasisTolerance)
		report, err := s.opt.Report(r.store)
		require.NoError(t, err)
		for _, v := range report.Variables {
			require.True(t, v.Residual >= 0 && v.Residual <= 1, "residual %g", v.Residual)
		}
	})
}

// stateFuzzRunOf is the fuzzer's run of a mode (0 matrix, 1 temporal), trained past warm-up once
// (every state variable exists) and its store saved.
func stateFuzzRunOf(t *testing.T, mode int) *stateFuzzRun {
	if stateFuzz[mode] != nil {
		return stateFuzz[mode]
	}
	s := &stateFuzzRun{}
	cfg := Subspace(optimizer.Adam().LearningRate(0.01).Done()).Rank(3).WarmUp(3).CheckEvery(2)
	if mode == 1 {
		cfg = cfg.Mode(Temporal)
	}
	s.opt = cfg.Done()
	s.run = newRun(t, s.opt)
	for range 5 {
		s.run.step(t)
	}
	s.saved = map[string]*tensors.Tensor{}
	for v := range s.run.store.IterVariables() {
		clone, err := v.MustValue().LocalClone()
		require.NoError(t, err)
		s.saved[v.Path()] = clone
		standIn := strings.HasPrefix(v.Path(), "/subspace/packs/"+step.SvPackValues.Name+"_") // never read
		if (strings.HasPrefix(v.Path(), "/subspace/") || strings.HasPrefix(v.Path(), "/AdamOptimizer/subspace/")) && !standIn {
			s.fuzzed = append(s.fuzzed, v.Path())
		}
	}
	stateFuzz[mode] = s
	return s
}

// load restores the saved store, with the input's bytes written bit for bit, cycling over it,
// into every state variable (zeros for an empty input).
func (s *stateFuzzRun) load(t *testing.T, data []byte) {
	word := 0
	next := func() []byte { // the next 8 bytes of the input, cycling
		var b [8]byte
		for i := range b {
			if len(data) > 0 {
				b[i] = data[(word*8+i)%len(data)]
			}
		}
		word++
		return b[:]
	}
	for _, path := range slices.Sorted(maps.Keys(s.saved)) { // in a fixed order: an input is one case
		value := s.saved[path]
		v := s.run.store.GetVariable(path)
		if !slices.Contains(s.fuzzed, path) {
			clone, err := value.LocalClone()
			require.NoError(t, err)
			require.NoError(t, v.SetValue(clone))
			continue
		}
		switch v.DType() {
		case dtypes.Float32:
			require.NoError(t, v.SetValue(fuzzedFloats(path, value, next)))
		case dtypes.Int32:
			require.NoError(t, v.SetValue(fuzzedInts(value, func() int32 { return int32(binary.LittleEndian.Uint32(next())) })))
		case dtypes.Int64:
			require.NoError(t, v.SetValue(fuzzedInts(value, func() int64 { return int64(binary.LittleEndian.Uint64(next())) })))
		default:
			t.Fatalf("state variable %s has dtype %s: teach the fuzzer to fill it", path, v.DType())
		}
	}
}

// fuzzedInts is value's shape (a counter, or matrix mode's vector of them) filled from next.
func fuzzedInts[T int32 | int64](value *tensors.Tensor, next func() T) *tensors.Tensor {
	xs := make([]T, value.Shape().Size())
	for i := range xs {
		xs[i] = next()
	}
	return tensors.FromFlatDataAndDimensions(xs, value.Shape().Dimensions...)
}

// fuzzedFloats is value's shape filled from next's bytes. The base optimizer's moments make the
// step: a finite but absurd one (a first moment of 1e30) makes an absurd step, as it would for
// stock Adam, which no check can tell from a real one. They get damage that can be told:
// non-finite or negative values, or values of a plausible size (above 1: kept as they were).
func fuzzedFloats(path string, value *tensors.Tensor, next func() []byte) *tensors.Tensor {
	n := value.Shape().Size()
	xs := make([]float32, n)
	kept := tensors.MustCopyFlatData[float32](value)
	for i := range xs {
		xs[i] = math.Float32frombits(binary.LittleEndian.Uint32(next()))
		x := float64(xs[i])
		if strings.HasPrefix(path, "/AdamOptimizer/") && !math.IsNaN(x) && !math.IsInf(x, 0) && x >= 0 && x > 1 {
			xs[i] = kept[i]
		}
	}
	return tensors.FromFlatDataAndDimensions(xs, value.Shape().Dimensions...)
}
