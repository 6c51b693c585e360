package hooks

import "encoding/json"

// The Monitor's trace (Monitor.Trace): one JSON line per observed step.

// TraceRecord is one line of a Monitor's trace: the drift signals and decisions after a step.
type TraceRecord struct {
	Step              int64              `json:"step"`
	LossEMA           float64            `json:"loss_ema"`
	PlateauChecks     int                `json:"plateau_checks"`
	Checks            int64              `json:"checks"`
	LastCheckResidual float64            `json:"last_check_residual"`
	Curvature         float64            `json:"curvature"`
	CurvatureEMA      float64            `json:"curvature_ema"`
	BasesLearned      int64              `json:"bases_learned"`
	Refreshes         int64              `json:"refreshes"`
	FullUpdates       int64              `json:"full_updates"`
	RankChanges       int64              `json:"rank_changes"`
	SkippedSteps      int64              `json:"skipped_steps"`
	LossRestarts      int64              `json:"loss_restarts,omitempty"`
	BasesKept         int64              `json:"bases_kept"`
	Event             string             `json:"event,omitempty"` // the basis learned at this step, with its cause
	Variables         []TraceOfAVariable `json:"variables"`
}

// TraceOfAVariable is a projected variable's part of a TraceRecord.
type TraceOfAVariable struct {
	Path              string  `json:"path"`
	Rank              int     `json:"rank"`
	Residual          float64 `json:"residual"`
	ExplainedVariance float64 `json:"explained_variance"`
}

// writeTrace writes the line of the step r was read after to the Monitor's Trace.
func (m *Monitor) writeTrace(r Report) error {
	rec := TraceRecord{Step: r.Steps, LossEMA: r.LossEMA, PlateauChecks: r.PlateauChecks, Checks: r.Checks,
		LastCheckResidual: r.LastCheckResidual, Curvature: r.Curvature, CurvatureEMA: r.CurvatureEMA,
		BasesLearned: r.SVDs, Refreshes: r.Refreshes, FullUpdates: r.FullUpdates, RankChanges: r.RankChanges,
		SkippedSteps: r.SkippedSteps, LossRestarts: r.LossRestarts, BasesKept: r.BasesKept}
	if n := len(m.Events); n > 0 && m.Events[n-1].Step == r.Steps {
		rec.Event = m.Events[n-1].String()
	}
	for _, v := range r.Variables {
		rec.Variables = append(rec.Variables, TraceOfAVariable{Path: v.Path, Rank: v.Rank, Residual: v.Residual, ExplainedVariance: v.ExplainedVariance})
	}
	line, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	_, err = m.Trace.Write(append(line, '\n'))
	return err
}
