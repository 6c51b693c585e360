package hooks

import (
	"fmt"
	"math"
	"path"
	"slices"
	"strings"

	"github.com/gomlx/gomlx/ml/model"
	"github.com/gradsub/gradsub/hooks/internal/rules"
	"github.com/gradsub/gradsub/hooks/internal/step"
)

// Report is what the projector did so far, read from its state variables.
type Report struct {
	Steps              int64 // steps taken by the optimizer; skipped steps (SkippedSteps) leave it unchanged
	Mode               Mode
	WarmUp             int     // configured warm-up steps
	SVDs               int64   // bases learned: warm-up plus refreshes (temporal: SVDs; matrix: starts of fast tracking)
	Refreshes          int64   // SVDs triggered by a drift check
	RefreshesResidual  int64   // … because the residual was above the threshold
	RefreshesLoss      int64   // … because the smoothed loss stopped falling
	RefreshesCurvature int64   // … because the curvature along a step jumped
	Checks             int64   // drift checks run
	FullUpdates        int64   // checks at which a variable took the part of its gradient outside its subspace
	LastFullUpdate     string  // the variable that took the last full update
	RankChanges        int64   // variables whose rank the rank rule changed (each recompiles the step once)
	Curvature          float64 // the last curvature measured along a step
	CurvaturePeak      float64 // at the last check: the largest |κ| over its smoothed magnitude since the check before
	CurvatureEMA       float64 // its smoothed magnitude
	// LearnRuns counts the steps that ran gated learning work (FLOPs.PerLearn): the temporal
	// SVDs. Matrix mode has no gated work (its PerLearn is 0).
	LearnRuns         int64
	LastCheckResidual float64 // largest relative residual at the last check
	LossEMA           float64 // smoothed loss (the plateau signal)
	PlateauChecks     int     // consecutive checks without the smoothed loss falling
	SkippedSteps      int64   // steps whose update was not applied: non-finite or exploding loss or gradient
	// LossRestarts counts lasting loss shifts: the loss stayed above Policy.ExplodeFactor times its
	// smoothed value for ExplodePatience skipped steps, so the guard took it as a new level (the
	// next step applied, the smoothed loss restarted from it) instead of skipping for good.
	LossRestarts int64
	// DivergenceHeld: the loss exploded in the run's first steps, and the guard holds the
	// weights where that left them (skipping steps, DivergenceHold at most in a row) until a step
	// is taken without exploding or the step graph is built anew: lower the learning rate and
	// resume.
	DivergenceHeld bool
	BasesKept      int64 // temporal learning attempts that met a zero or non-finite stack and kept the basis
	LastSVDStep    int64
	LastSVDCause   Cause
	// NothingProjected: the plan left every variable out (the automatic rank, on a small model
	// or at small batches): the steps are the base optimizer's alone, and PlanString says why.
	NothingProjected bool
	// Disabled: the optimizer is switched off (Enabled(false), or the param subspace_enabled
	// false): the base optimizer trains every variable, and no projector state is kept or read.
	Disabled  bool
	Variables []VariableReport
}

// VariableReport is the state of one projected variable.
type VariableReport struct {
	Path              string
	Shape             string
	Kind              Route   // temporal, direct or post-hoc
	Side              string  // matrix subspace: left or right
	MaxRank           int     // configured k
	Rank              int     // effective rank of the current basis
	ExplainedVariance float64 // of the snapshots the current basis was learned from
	Residual          float64 // relative residual at the last check
	Valid             bool    // a basis has been learned
	// HighChecks and LowChecks are the rank rule's streaks: consecutive checks with the residual
	// above Policy.GrowAbove, below Policy.ShrinkBelow (adaptive rank only).
	HighChecks, LowChecks int
	// StepScale is the step-length rule's factor on the tracked directions' step (ScaleAdaptation),
	// between 1 and √(side/rank); 1 where the rule is off or keeps the step as it is.
	StepScale float64
}

// variable returns the report of the projected variable at path.
func (r Report) variable(path string) (VariableReport, bool) {
	for _, v := range r.Variables {
		if v.Path == path {
			return v, true
		}
	}
	return VariableReport{}, false
}

// Ranks formats the variables' current ranks ("4,8,4").
func (r Report) Ranks() string {
	parts := make([]string, len(r.Variables))
	for i, v := range r.Variables {
		parts[i] = fmt.Sprint(v.Rank)
	}
	return strings.Join(parts, ",")
}

// MeanExplainedVariance averages the explained variance over the projected variables.
func (r Report) MeanExplainedVariance() float64 {
	if len(r.Variables) == 0 {
		return 0
	}
	var sum float64
	for _, v := range r.Variables {
		sum += v.ExplainedVariance
	}
	return sum / float64(len(r.Variables))
}

// disabledLine opens what the plan and the Report say of a disabled optimizer.
const disabledLine = "subspace: disabled (Enabled(false), or subspace_enabled=false): the base optimizer trains"

// String formats the report for people: a summary line and one line per variable.
// divergenceAdvice is what the Report and the Monitor say of a held divergence.
const divergenceAdvice = "the loss exploded in the first steps: the run is diverging, and the guard holds the weights where the explosion left them (skipping steps); lower the learning rate and resume"

// String is the report for people: what the projector did, a line per variable, and any advice
// (a divergence held, skipped steps).
func (r Report) String() string {
	if r.Disabled {
		return disabledLine + " alone\n"
	}
	if r.NothingProjected {
		// No projector state to speak of: the steps were the base optimizer's.
		return "subspace: no variable projected: the model trains with its base optimizer alone (Optimizer.PlanString says why)\n"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "subspace (%s): %d steps (warm-up %d, %d skipped), %d bases learned, %d refreshes (%d residual, %d loss, %d curvature) in %d checks; last check residual %.3f; %d full updates, %d rank changes\n",
		r.Mode, r.Steps, r.WarmUp, r.SkippedSteps, r.SVDs, r.Refreshes, r.RefreshesResidual, r.RefreshesLoss, r.RefreshesCurvature, r.Checks, r.LastCheckResidual, r.FullUpdates, r.RankChanges)
	if r.LossRestarts > 0 {
		fmt.Fprintf(&b, "  the loss shifted to a new level %d time(s): after %d skipped steps the guard took it and restarted the smoothed loss\n", r.LossRestarts, ExplodePatience)
	}
	if r.DivergenceHeld {
		b.WriteString("  " + divergenceAdvice + "\n")
	}
	for _, v := range r.Variables {
		state := "warming up"
		if v.Valid {
			state = fmt.Sprintf("rank %d/%d, explained variance %.3f, residual %.3f", v.Rank, v.MaxRank, v.ExplainedVariance, v.Residual)
			if v.StepScale != 1 {
				state += fmt.Sprintf(", step ×%.2f", v.StepScale)
			}
		}
		fmt.Fprintf(&b, "  %-32s %-14s %s: %s\n", v.Path, v.Shape, v.Kind, state)
	}
	return b.String()
}

// Report reads the projector's state from the store (the trainer's). It is cheap: a few scalars
// per projected variable. Before the first step it returns an empty report.
func (o *Optimizer) Report(store *model.Store) (Report, error) {
	if store == nil {
		return Report{}, fmt.Errorf("hooks: Report needs the store the trainer uses (got nil)")
	}
	o.mu.Lock()
	root, plan, enabled := o.stateRoot, append([]PlanEntry(nil), o.plan...), o.cfg.enabled // cfg: set by the params at the first step
	o.mu.Unlock()
	if !enabled {
		// A store resumed from a projected run may hold counters: they are not this run's.
		return Report{Mode: o.cfg.mode, Disabled: true}, nil
	}
	r := Report{Mode: o.cfg.mode, WarmUp: o.cfg.warmUp, NothingProjected: len(plan) > 0 && !projectsAny(plan)}
	if root == "" {
		// No step graph built by this optimizer yet: a resumed store still holds the counters
		// (at the root scope's state, where a trainer's optimizer keeps them); the per-variable
		// lines need the plan of a first step.
		root = path.Join("/", StateScope)
		if store.GetVariable(step.SvStep.Of(root)) == nil {
			return r, nil
		}
	}
	sr := &stateReader{store: store, matrixAt: matrixPositions(plan)}
	sr.counters(&r, root)
	var lastFull any = sr.optional(step.SvLastFullTurn.Of(root))
	for _, e := range plan {
		if e.Route != RouteFull {
			r.Variables = append(r.Variables, o.variableReport(sr, root, e))
		}
	}
	if r.FullUpdates > 0 && lastFull != nil {
		// Handlers run in path order (internal/step/step.go): the stored index is into the sorted paths.
		paths := make([]string, len(r.Variables))
		for i, v := range r.Variables {
			paths[i] = v.Path
		}
		slices.Sort(paths)
		if i := int(asInt(lastFull)); i >= 0 && i < len(paths) {
			r.LastFullUpdate = paths[i]
		}
	}
	return r, sr.err
}

// counters fills r's run-wide counters and signals from the state under root.
func (sr *stateReader) counters(r *Report, root string) {
	r.Steps = asInt(sr.read(step.SvStep.Of(root)))
	r.SVDs = asInt(sr.read(step.SvLearnings.Of(root)))
	r.Refreshes = asInt(sr.read(step.SvRefreshes.Of(root)))
	r.RefreshesResidual = asInt(sr.read(step.SvByResidual.Of(root)))
	r.RefreshesLoss = asInt(sr.read(step.SvByLoss.Of(root)))
	r.RefreshesCurvature = asInt(sr.optional(step.SvByCurvature.Of(root)))
	r.Checks = asInt(sr.read(step.SvChecks.Of(root)))
	r.FullUpdates = asInt(sr.optional(step.SvFullUpdates.Of(root)))
	r.RankChanges = asInt(sr.optional(step.SvRankChanges.Of(root)))
	r.Curvature = asFloat(sr.optional(step.SvCurvature.Of(root)))
	r.CurvatureEMA = asFloat(sr.optional(step.SvCurvatureEMA.Of(root)))
	r.CurvaturePeak = asFloat(sr.optional(step.SvLastCheckPeak.Of(root)))
	r.SkippedSteps = asInt(sr.read(step.SvSkippedSteps.Of(root)))
	r.LossRestarts = asInt(sr.optional(step.SvLossRestarts.Of(root)))         // absent from checkpoints before 2026-12-02
	r.DivergenceHeld = asInt(sr.optional(step.SvDivergenceHold.Of(root))) > 0 // absent before 2026-12-06
	r.BasesKept = asInt(sr.optional(step.SvBasesKept.Of(root)))               // temporal mode
	r.LastCheckResidual = asFloat(sr.read(step.SvLastResidual.Of(root)))
	r.LossEMA = asFloat(sr.read(step.SvLossEMA.Of(root)))
	r.PlateauChecks = int(asInt(sr.read(step.SvPlateauChecks.Of(root))))
	r.LastSVDStep = asInt(sr.read(step.SvLastLearnStep.Of(root)))
	r.LastSVDCause = Cause(asInt(sr.read(step.SvLastLearnCause.Of(root))))
	r.LearnRuns = r.SVDs
}

// variableReport is a projected variable's line of the Report, from its plan entry and state.
func (o *Optimizer) variableReport(sr *stateReader, root string, e PlanEntry) VariableReport {
	at := func(s rules.StateVar) any { return sr.perVariable(root, s, e.Variable, false) }
	vr := VariableReport{
		Path:     e.Variable,
		Shape:    fmt.Sprint(e.Shape.Dimensions),
		Kind:     e.Route,
		Side:     e.Side.String(),
		MaxRank:  e.Rank,
		Rank:     e.Rank,
		Residual: asFloat(at(step.SvResidual)),
		Valid:    asInt(at(step.SvValid)) > 0,
	}
	if e.Route == RouteTemporal {
		vr.Rank = int(asInt(at(step.SvRank)))
		vr.ExplainedVariance = asFloat(at(step.SvExplained)) // of the snapshots of its SVD
	} else {
		// Matrix mode: the share of the gradient's energy in the basis, from the smoothed
		// sketch residual r (‖g − QQᵀg‖² = (1 − share)·‖g‖²).
		vr.ExplainedVariance = max(0, 1-vr.Residual*vr.Residual)
	}
	vr.StepScale = 1
	if logScale := sr.perVariable(root, step.SvStepLogScale, e.Variable, true); logScale != nil {
		vr.StepScale = math.Exp(asFloat(logScale))
	}
	if e.Route != RouteTemporal && o.cfg.policy.Adaptive(o.cfg.rank) && o.cfg.policy.CheckEvery > 0 {
		vr.HighChecks = int(asInt(at(step.SvHighChecks)))
		vr.LowChecks = int(asInt(at(step.SvLowChecks)))
	}
	return vr
}
