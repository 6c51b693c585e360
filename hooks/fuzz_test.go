package hooks

import (
	"math"
	"testing"

	"github.com/gomlx/gomlx/ml/train/optimizer"
)

// FuzzValidate: whatever numbers a user passes (NaN, ±Inf, negative, huge), Validate returns an
// error or accepts a configuration whose numbers are all finite and in range; it never panics.
func FuzzValidate(f *testing.F) {
	f.Add(4, 0, 0.0, 0.5, 1.0, 4.0, 100.0, 0.0)
	f.Add(0, 7, math.NaN(), math.Inf(1), -1.0, 0.0, 0.5, 1e30)
	f.Add(8, 1, 0.01, 0.2, 0.0, 64.0, 0.0, 0.9)
	f.Fuzz(func(t *testing.T, rank, mode int, weightDecay, residual, slow, fast, explode, variance float64) {
		cfg := Subspace(optimizer.Adam().Done()).Rank(rank).Mode(Mode(mode)).WeightDecay(weightDecay).
			ResidualThreshold(residual).TrackingRate(slow, fast).ExplodeFactor(explode)
		if Mode(mode) == Temporal {
			cfg = cfg.VarianceThreshold(variance).WarmUp(max(rank, 1))
		}
		if err := cfg.Validate(); err != nil {
			return
		}
		p := cfg.DriftPolicy()
		for _, v := range []float64{cfg.weightDecay, cfg.varianceThreshold, p.ResidualThreshold, p.TrackingRate, p.FastTrackingRate, p.ExplodeFactor} {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				t.Fatalf("accepted a non-finite number: %+v", cfg)
			}
		}
		if rank < 1 || (Mode(mode) != Matrix && Mode(mode) != Temporal) || weightDecay < 0 || weightDecay > 1 ||
			residual <= 0 || residual > 1 || p.TrackingRate < 0 || p.FastTrackingRate < p.TrackingRate ||
			p.FastTrackingRate > MaxTrackingRate || (explode != 0 && explode <= 1) {
			t.Fatalf("accepted an out-of-range configuration: rank %d mode %d wd %g residual %g rates %g %g explode %g", rank, mode, weightDecay, residual, p.TrackingRate, p.FastTrackingRate, explode)
		}
	})
}
