package step

import (
	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gradsub/gradsub/hooks/internal/rules"
	"github.com/gradsub/gradsub/internal/upstream"
)

// driftSignals are the inputs of the in-graph rules at one step (scalars).
type driftSignals struct {
	isCheck, ok   *Node
	residual      *Node // largest relative residual of the control gradients (loss dtype)
	drift         *Node // largest growth of a variable's residual since its basis's first check; −1 at that check
	plateau       *Node // checks without the smoothed loss falling, this check included (int32)
	curvaturePeak *Node // largest |κ| / smoothed |κ| since the last check (loss dtype)
}

// driftDecision is what the in-graph rules decided (scalar bools).
type driftDecision struct {
	refresh, byResidual, byLoss, byCurvature *Node
}

// decide applies p's residual, loss and curvature  Only a check on a healthy step (ok) can
// refresh; the causes are reported in that order of precedence.
func decide(p rules.Policy, s driftSignals) driftDecision {
	g := s.isCheck.Graph()
	at := LogicalAnd(s.isCheck, s.ok)
	off := Const(g, false)
	d := driftDecision{byResidual: off, byLoss: off, byCurvature: off}
	if p.ResidualThreshold < 1 {
		dt := s.residual.DType()
		d.byResidual = LogicalAnd(at, LogicalAnd(GreaterThan(s.residual, Scalar(g, dt, p.ResidualThreshold)),
			GreaterThan(s.drift, Scalar(g, dt, p.DriftMargin))))
	}
	if p.LossPatience > 0 {
		d.byLoss = LogicalAnd(at, GreaterOrEqual(s.plateau, Const(g, int32(p.LossPatience))))
	}
	if p.CurvatureFactor > 0 {
		d.byCurvature = LogicalAnd(at, GreaterThan(s.curvaturePeak, Scalar(g, s.curvaturePeak.DType(), p.CurvatureFactor)))
	}
	d.refresh = LogicalOr(d.byResidual, LogicalOr(d.byLoss, d.byCurvature))
	return d
}

// fullUpdateTurn says whether variable index (of n projected) takes a full update this step:
// at every FullUpdateEvery-th check (checks counts this one), variables in turn.
func fullUpdateTurn(p rules.Policy, isCheck, checks *Node, index, n int) *Node {
	g := isCheck.Graph()
	if p.FullUpdateEvery <= 0 {
		return Const(g, false)
	}
	every := int64(p.FullUpdateEvery)
	due := Equal(ModScalar(checks, every), Const(g, int64(0)))
	turn := Equal(ModScalar(Div(checks, Const(g, every)), int64(n)), Const(g, int64(index)))
	return LogicalAnd(isCheck, LogicalAnd(due, turn))
}

// rankStreaks updates a variable's counts of consecutive checks with its residual above
// GrowAbove (high) and below ShrinkBelow (low); they are read by the host's rank rule.
func rankStreaks(p rules.Policy, isCheck, residual, high, low *Node) (newHigh, newLow *Node) {
	g := isCheck.Graph()
	dt := residual.DType()
	bump := func(count, cond *Node) *Node {
		next := Where(cond, AddScalar(count, 1), upstream.ZeroOf(count))
		return Where(isCheck, next, count)
	}
	newHigh = bump(high, GreaterThan(residual, Scalar(g, dt, p.GrowAbove)))
	newLow = bump(low, LessThan(residual, Scalar(g, dt, p.ShrinkBelow)))
	return
}

// counterDType is the dtype of the policy's streak counters.
const counterDType = dtypes.Int32
