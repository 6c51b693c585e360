package hooks

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestPolicyNextRank: double up to MaxRank (and the variable's size), halve down to MinRank,
// only after RankPatience checks.
func TestPolicyNextRank(t *testing.T) {
	p := DefaultPolicy()
	p.MinRank, p.MaxRank = 2, 12
	cases := []struct{ r, high, low, limit, want int }{
		{4, 3, 0, 100, 8},  // grow
		{8, 3, 0, 100, 12}, // capped by MaxRank
		{8, 3, 0, 10, 10},  // capped by the variable's smaller side
		{12, 5, 0, 100, 12},
		{4, 2, 0, 100, 4}, // not patient enough
		{8, 0, 3, 100, 4}, // shrink
		{3, 0, 3, 100, 2}, // floored by MinRank
		{2, 0, 9, 100, 2},
	}
	for _, c := range cases {
		got, why := p.NextRank(c.r, c.high, c.low, c.limit)
		require.Equal(t, c.want, got, "%+v", c)
		require.Equal(t, got != c.r, why != "", "a change comes with its reason")
	}
	fixed := DefaultPolicy()
	got, _ := fixed.NextRank(4, 10, 0, 100)
	require.Equal(t, 4, got, "adaptive rank is off by default")
}

func TestPolicyValidate(t *testing.T) {
	require.NoError(t, DefaultPolicy().Validate(4))
	bad := map[string]func(p *Policy){
		"TrackingRate":     func(p *Policy) { p.TrackingRate = -1 },
		"DriftMargin":      func(p *Policy) { p.DriftMargin = 1 },
		"CurvatureFactor":  func(p *Policy) { p.CurvatureFactor = -1 },
		"FullUpdateEvery":  func(p *Policy) { p.FullUpdateEvery = -2 },
		"MinRank 9":        func(p *Policy) { p.MinRank, p.MaxRank = 9, 8 },
		"ShrinkBelow 0.95": func(p *Policy) { p.MaxRank, p.ShrinkBelow = 16, 0.95 },
		"RankPatience 0":   func(p *Policy) { p.MaxRank, p.RankPatience = 16, 0 },
		"ResidualThreshold": func(p *Policy) {
			p.ResidualThreshold = 0
		},
		"Policy.CurvatureFactor is +Inf": func(p *Policy) { p.CurvatureFactor = math.Inf(1) },
		"Policy.DriftMargin is NaN":      func(p *Policy) { p.DriftMargin = math.NaN() },
		"Policy.GrowAbove is NaN":        func(p *Policy) { p.MaxRank, p.GrowAbove = 16, math.NaN() },
	}
	for want, breakIt := range bad {
		p := DefaultPolicy()
		breakIt(&p)
		require.ErrorContains(t, p.Validate(4), want)
	}
}
