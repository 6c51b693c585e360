package step

import (
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gradsub/gradsub/hooks/internal/rules"
	"github.com/gradsub/gradsub/internal/upstream"
)

// This rule's state: entries of the schema (state.go).
var (
	SvLearnNext   = rules.NewStateVar("learn_next", dtypes.Int32, "rank rule: learn the bases at their new ranks next step")
	SvRankChanges = rules.NewStateVar("rank_changes", dtypes.Int64, "rank rule: variables whose rank changed (kept on the host)")
	SvHighChecks  = rules.NewStateVar("high_checks", counterDType, "rank rule: checks in a row above GrowAbove")
	SvLowChecks   = rules.NewStateVar("low_checks", counterDType, "rank rule: checks in a row below ShrinkBelow")
)

// The rank rule's part of the step graph: each variable's streaks of checks above GrowAbove and
// below ShrinkBelow, which the host reads (AdaptRanks), and the host's request to learn the bases
// at their new ranks.

// rankChangeAsksToLearn is the rank rule's request to the controller: the host changed a rank
// (AdaptRanks), and the bases are to be learned at the new ranks (nil where the rule is off).
func (st *stepState) rankChangeAsksToLearn() *Node {
	if !st.adaptive() {
		return nil
	}
	return GreaterThan(st.scalar(SvLearnNext).NodeValue(st.g), Const(st.g, int32(0)))
}

// rankChangeLearned clears the request once the bases are learned (learnNow).
func (st *stepState) rankChangeLearned(learnNow *Node) {
	if !st.adaptive() {
		return
	}
	v := st.scalar(SvLearnNext)
	v.SetNodeValue(Where(learnNow, Const(st.g, int32(0)), v.NodeValue(st.g)))
}

// advanceRankStreaks counts each variable's checks in a row with its residual above GrowAbove and
// below ShrinkBelow; the streaks restart after a basis is learned: the new basis is judged on its
// own. In matrix mode the streaks are vectors over the matrices.
func (st *stepState) advanceRankStreaks(hs []handler, learnNow *Node, check stepCheck) {
	g := st.g
	counted := LogicalAnd(st.isCheck, check.ok)
	if ms := st.matrices; ms != nil {
		all := ms.members
		highVar, lowVar := ms.vector(SvHighChecks, counterDType), ms.vector(SvLowChecks, counterDType)
		high, low := rankStreaks(st.cfg.Policy, counted, ms.read(ms.residual, all), ms.read(highVar, all), ms.read(lowVar, all))
		ms.write(highVar, all, Where(learnNow, ZerosLike(high), high))
		ms.write(lowVar, all, Where(learnNow, ZerosLike(low), low))
		return
	}
	for _, h := range hs { // temporal mode
		v := h.variable()
		highVar := st.perVariable(v, SvHighChecks, shapes.Make(counterDType))
		lowVar := st.perVariable(v, SvLowChecks, shapes.Make(counterDType))
		high, low := rankStreaks(st.cfg.Policy, counted, h.(*temporalVar).residual(), highVar.NodeValue(g), lowVar.NodeValue(g))
		highVar.SetNodeValue(Where(learnNow, upstream.ZeroOf(high), high))
		lowVar.SetNodeValue(Where(learnNow, upstream.ZeroOf(low), low))
	}
}

// keepRankChangeCount creates the count of rank changes, which the host keeps (AdaptRanks).
func (st *stepState) keepRankChangeCount() { st.scalar(SvRankChanges) }
