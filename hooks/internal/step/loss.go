package step

import (
	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gradsub/gradsub/hooks/internal/rules"
	"github.com/gradsub/gradsub/internal/upstream"
)

// This rule's state: entries of the schema (state.go).
var (
	SvLossEMA       = rules.NewStateVar("loss_ema", dtypes.InvalidDType, "loss rule: smoothed loss")
	SvBestLossEMA   = rules.NewStateVar("best_loss_ema", dtypes.InvalidDType, "loss rule: best smoothed loss since the last refresh")
	SvPlateauChecks = rules.NewStateVar("plateau_checks", dtypes.Int32, "loss rule: consecutive checks without progress")
)

// lossRule smooths the loss and watches its progress (Policy.LossPatience): its state is the
// smoothed loss, the best smoothed loss since the last refresh and the checks without progress.
// The guard judges a step against its smoothed loss (smoothed), the controller reads its signal
// (measure) and the rule advances after the controller's decision (advance).
type lossRule struct {
	st                 *stepState
	ema, best, plateau *model.Variable
}

// lossSignal is the smoothed loss after this step and its progress.
type lossSignal struct {
	ema, best         *Node
	plateau           *Node // checks without progress before this step
	improved          *Node // the smoothed loss is below the best by LossMinImprovement
	plateauAfterCheck *Node // the plateau count if this step is a check
}

func (st *stepState) loadLossRule() lossRule {
	return lossRule{st: st, ema: st.scalar(SvLossEMA), best: st.scalar(SvBestLossEMA), plateau: st.scalar(SvPlateauChecks)}
}

// smoothed is the smoothed loss before this step.
func (r lossRule) smoothed() *Node { return r.ema.NodeValue(r.st.g) }

// measure smooths the loss: an EMA seeded with the first loss (and after an explosion's reseed);
// a non-finite loss, a skipped step or no loss at all (accumulated gradients) leaves it.
func (r lossRule) measure(check stepCheck) lossSignal {
	st, g := r.st, r.st.g
	ema := r.ema.NodeValue(g)
	isFirst := LogicalOr(LogicalOr(st.first, check.reseed), LogicalNot(IsFinite(ema)))
	newEMA := Where(isFirst, st.loss, Add(MulScalar(ema, rules.LossEMADecay), MulScalar(st.loss, 1-rules.LossEMADecay)))
	newEMA = Where(check.ok, newEMA, ema)
	if st.noLoss {
		newEMA = ema
	}
	s := lossSignal{ema: newEMA, best: r.best.NodeValue(g)}
	s.improved = LessThan(newEMA, MulScalar(s.best, 1-rules.LossMinImprovement))
	s.plateau = Max(r.plateau.NodeValue(g), Const(g, int32(0)))
	s.plateauAfterCheck = Where(s.improved, upstream.ZeroOf(s.plateau), AddScalar(s.plateau, 1))
	return s
}

// advance stores the smoothed loss, and the best and the plateau: seeded during warm-up,
// updated at checks, reset by a refresh.
func (r lossRule) advance(s lossSignal, d *decision) {
	st := r.st
	r.ema.SetNodeValue(s.ema)
	newBest := Where(LogicalOr(st.warm, LogicalOr(d.refresh, LogicalAnd(st.isCheck, s.improved))), s.ema, s.best)
	newPlateau := Where(LogicalAnd(st.isCheck, LogicalNot(d.refresh)), s.plateauAfterCheck, Where(d.refresh, upstream.ZeroOf(s.plateau), s.plateau))
	r.best.SetNodeValue(newBest)
	r.plateau.SetNodeValue(newPlateau)
}
