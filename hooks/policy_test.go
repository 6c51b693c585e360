package hooks

import (
	"math"
	"testing"

	. "github.com/gomlx/gomlx/core/graph"
	"github.com/stretchr/testify/require"
)

// TestPolicyRefreshRules: each in-graph rule fires on its own signal, only at a check of a
// healthy step, and not when disabled.
func TestPolicyRefreshRules(t *testing.T) {
	p := DefaultPolicy() // residual 0.5, loss patience 4, curvature factor 10
	type in struct {
		check, ok       bool
		resid, peak     float32
		drift           float32
		plateau         int32
		residual, loss  bool
		curvature, want bool
	}
	cases := map[string]in{
		"quiet":                 {check: true, ok: true, resid: 0.3, peak: 2, plateau: 1},
		"residual":              {check: true, ok: true, resid: 0.7, drift: 0.4, peak: 2, plateau: 1, residual: true, want: true},
		"high but steady":       {check: true, ok: true, resid: 0.9, drift: 0.05, peak: 2, plateau: 1},
		"fresh basis's check":   {check: true, ok: true, resid: 0.9, drift: -1, peak: 2, plateau: 1},
		"grown but low":         {check: true, ok: true, resid: 0.4, drift: 0.3, peak: 2, plateau: 1},
		"loss plateau":          {check: true, ok: true, resid: 0.3, peak: 2, plateau: 4, loss: true, want: true},
		"curvature jump":        {check: true, ok: true, resid: 0.3, peak: 11, plateau: 1, curvature: true, want: true},
		"all at once":           {check: true, ok: true, resid: 0.9, drift: 0.5, peak: 50, plateau: 9, residual: true, loss: true, curvature: true, want: true},
		"not a check":           {check: false, ok: true, resid: 0.9, peak: 50, plateau: 9},
		"skipped (bad) step":    {check: true, ok: false, resid: 0.9, peak: 50, plateau: 9},
		"residual at threshold": {check: true, ok: true, resid: 0.5, peak: 10, plateau: 3},
	}
	for name, c := range cases {
		got := MustExecOnceN(testBackend(t), func(g *Graph) []*Node {
			d := p.decide(driftSignals{isCheck: Const(g, c.check), ok: Const(g, c.ok), residual: Const(g, c.resid), drift: Const(g, c.drift),
				plateau: Const(g, c.plateau), curvaturePeak: Const(g, c.peak)})
			return []*Node{d.refresh, d.byResidual, d.byLoss, d.byCurvature}
		})
		require.Equal(t, []bool{c.want, c.residual, c.loss, c.curvature},
			[]bool{got[0].Value().(bool), got[1].Value().(bool), got[2].Value().(bool), got[3].Value().(bool)}, name)
	}

	// Disabled rules never fire.
	off := Policy{ResidualThreshold: 1}
	got := MustExecOnceN(testBackend(t), func(g *Graph) []*Node {
		d := off.decide(driftSignals{isCheck: Const(g, true), ok: Const(g, true), residual: Const(g, float32(1)), drift: Const(g, float32(1)),
			plateau: Const(g, int32(100)), curvaturePeak: Const(g, float32(1e6))})
		return []*Node{d.refresh}
	})
	require.False(t, got[0].Value().(bool))
}

// TestPolicyFullUpdateRotation: every FullUpdateEvery-th check, one variable, in turn.
func TestPolicyFullUpdateRotation(t *testing.T) {
	p := Policy{FullUpdateEvery: 2}
	const n = 3
	var turns [][n]bool
	for checks := int64(1); checks <= 8; checks++ {
		var row [n]bool
		for i := range n {
			got := MustExecOnce(testBackend(t), func(g *Graph) *Node {
				return p.fullUpdateTurn(Const(g, true), Const(g, checks), i, n)
			})
			row[i] = got.Value().(bool)
		}
		turns = append(turns, row)
	}
	require.Equal(t, [][n]bool{
		{}, {false, true, false}, {}, {false, false, true}, {}, {true, false, false}, {}, {false, true, false},
	}, turns)
	got := MustExecOnce(testBackend(t), func(g *Graph) *Node {
		return p.fullUpdateTurn(Const(g, false), Const(g, int64(2)), 1, n)
	})
	require.False(t, got.Value().(bool), "only at checks")
}

// TestPolicyRankStreaks: the streaks count consecutive checks beyond each level, and restart.
func TestPolicyRankStreaks(t *testing.T) {
	p := DefaultPolicy() // grow above 0.6, shrink below 0.2
	high, low := int32(0), int32(0)
	var highs, lows []int32
	for _, step := range []struct {
		check bool
		resid float32
	}{{true, 0.95}, {false, 0.1}, {true, 0.97}, {true, 0.5}, {true, 0.1}, {true, 0.15}, {true, 0.99}} {
		got := MustExecOnceN(testBackend(t), func(g *Graph) []*Node {
			h, l := p.rankStreaks(Const(g, step.check), Const(g, step.resid), Const(g, high), Const(g, low))
			return []*Node{h, l}
		})
		high, low = got[0].Value().(int32), got[1].Value().(int32)
		highs, lows = append(highs, high), append(lows, low)
	}
	require.Equal(t, []int32{1, 1, 2, 0, 0, 0, 1}, highs)
	require.Equal(t, []int32{0, 0, 0, 0, 1, 2, 0}, lows)
}

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
