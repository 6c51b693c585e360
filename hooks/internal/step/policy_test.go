package step

import (
	"testing"

	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gradsub/gradsub/hooks/internal/rules"
	"github.com/stretchr/testify/require"
)

// TestPolicyRefreshRules: each in-graph rule fires on its own signal, only at a check of a
// healthy step, and not when disabled.
func TestPolicyRefreshRules(t *testing.T) {
	p := rules.DefaultPolicy() // residual 0.5, loss patience 4, curvature factor 10
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
			d := decide(p, driftSignals{isCheck: Const(g, c.check), ok: Const(g, c.ok), residual: Const(g, c.resid), drift: Const(g, c.drift),
				plateau: Const(g, c.plateau), curvaturePeak: Const(g, c.peak)})
			return []*Node{d.refresh, d.byResidual, d.byLoss, d.byCurvature}
		})
		require.Equal(t, []bool{c.want, c.residual, c.loss, c.curvature},
			[]bool{got[0].Value().(bool), got[1].Value().(bool), got[2].Value().(bool), got[3].Value().(bool)}, name)
	}

	// Disabled rules never fire.
	off := rules.Policy{ResidualThreshold: 1}
	got := MustExecOnceN(testBackend(t), func(g *Graph) []*Node {
		d := decide(off, driftSignals{isCheck: Const(g, true), ok: Const(g, true), residual: Const(g, float32(1)), drift: Const(g, float32(1)),
			plateau: Const(g, int32(100)), curvaturePeak: Const(g, float32(1e6))})
		return []*Node{d.refresh}
	})
	require.False(t, got[0].Value().(bool))
}

// TestPolicyFullUpdateRotation: every FullUpdateEvery-th check, one variable, in turn.
func TestPolicyFullUpdateRotation(t *testing.T) {
	p := rules.Policy{FullUpdateEvery: 2}
	const n = 3
	var turns [][n]bool
	for checks := int64(1); checks <= 8; checks++ {
		var row [n]bool
		for i := range n {
			got := MustExecOnce(testBackend(t), func(g *Graph) *Node {
				return fullUpdateTurn(p, Const(g, true), Const(g, checks), i, n)
			})
			row[i] = got.Value().(bool)
		}
		turns = append(turns, row)
	}
	require.Equal(t, [][n]bool{
		{}, {false, true, false}, {}, {false, false, true}, {}, {true, false, false}, {}, {false, true, false},
	}, turns)
	got := MustExecOnce(testBackend(t), func(g *Graph) *Node {
		return fullUpdateTurn(p, Const(g, false), Const(g, int64(2)), 1, n)
	})
	require.False(t, got.Value().(bool), "only at checks")
}

// TestPolicyRankStreaks: the streaks count consecutive checks beyond each level, and restart.
func TestPolicyRankStreaks(t *testing.T) {
	p := rules.DefaultPolicy() // grow above 0.6, shrink below 0.2
	high, low := int32(0), int32(0)
	var highs, lows []int32
	for _, step := range []struct {
		check bool
		resid float32
	}{{true, 0.95}, {false, 0.1}, {true, 0.97}, {true, 0.5}, {true, 0.1}, {true, 0.15}, {true, 0.99}} {
		got := MustExecOnceN(testBackend(t), func(g *Graph) []*Node {
			h, l := rankStreaks(p, Const(g, step.check), Const(g, step.resid), Const(g, high), Const(g, low))
			return []*Node{h, l}
		})
		high, low = got[0].Value().(int32), got[1].Value().(int32)
		highs, lows = append(highs, high), append(lows, low)
	}
	require.Equal(t, []int32{1, 1, 2, 0, 0, 0, 1}, highs)
	require.Equal(t, []int32{0, 0, 0, 0, 1, 2, 0}, lows)
}
