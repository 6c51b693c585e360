package hooks

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/train"
)

// Event is one learning of the bases, as seen by a Monitor: in temporal mode an SVD of the
// recent gradients; in matrix mode, where bases move every step, the start of a burst of fast
// tracking (FastSteps steps at Policy.FastTrackingRate).
type Event struct {
	Step              int64
	Cause             Cause
	Residual          float64 // largest relative residual at the check (refreshes only)
	ExplainedVariance float64 // mean over the projected variables that hold a basis, as the event starts
	Signal            string  // the signal and the threshold that caused it (refreshes only)
	FastSteps         int     // matrix mode: steps of fast tracking from Step
	// WithoutBasis lists the variables that still hold no basis after it (temporal: their
	// gradients were zero or non-finite): they take full steps until a check learns one.
	WithoutBasis []string
}

// String is the event as the Monitor logs it: the step, the cause and what the new bases hold.
func (e Event) String() string {
	s := fmt.Sprintf("step %d: basis learned (%s)", e.Step, e.Cause)
	if e.Signal != "" {
		s += ": " + e.Signal
	}
	if e.FastSteps > 0 {
		s += fmt.Sprintf("; fast tracking for %d steps", e.FastSteps)
	}
	s += fmt.Sprintf("; explained variance %.3f", e.ExplainedVariance)
	if len(e.WithoutBasis) > 0 {
		s += fmt.Sprintf("; still without a basis (zero or non-finite gradients, full steps until a check learns one): %s", strings.Join(e.WithoutBasis, ", "))
	}
	return s
}

// Monitor watches the projector after each step and logs every SVD with its cause.
type Monitor struct {
	opt         *Optimizer
	store       *model.Store
	seen        int64
	skipped     int64
	restarts    int64
	kept        int64
	last        Report
	builds      int
	fullUpdates int64
	Events      []Event
	// Logf receives one line per event; nil keeps them silent (they are still in Events).
	Logf func(format string, args ...any)
	// Trace, if set, receives one JSON line (a TraceRecord) per Observe: every signal and decision.
	Trace io.Writer
	// Trainer, if set (AttachToLoop sets it), lets Observe apply the rank rule (AdaptRanks),
	// which recompiles the trainer's step after a change.
	Trainer *train.Trainer
	// RankChanges lists the rank rule's actions.
	RankChanges []RankChange
	// History holds one Sample per Observe (it grows with the run), for plots of the controller
	// over time.
	History []Sample
	// Times splits the wall time of the steps given to ObserveTimed by what they ran.
	Times StepTimes
}

// Sample is what a Monitor saw after one step.
type Sample struct {
	Step      int64
	Checked   bool    // a drift check ran at this step
	Learned   bool    // the bases were learned at this step (warm-up, refresh or rank change)
	Residual  float64 // largest relative residual at the last check
	MeanRank  float64 // mean rank of the projected variables
	Curvature float64 // the last curvature measured along a step
}

// StepTimes splits steps' wall time by what the step ran: the projector's warm-up, a drift check
// or refresh after it (the controller's gated work), or neither. Steps that compiled the step
// graph are left out.
type StepTimes struct {
	Plain, WarmUp, Controller []time.Duration
}

// ControllerOverhead is the share of the steps' wall time spent on the controller's gated work:
// for each check or refresh step, its time beyond the median plain step.
func (s StepTimes) ControllerOverhead() float64 { return s.overhead(s.Controller) }

// WarmUpOverhead is the same share for the warm-up's learning steps.
func (s StepTimes) WarmUpOverhead() float64 { return s.overhead(s.WarmUp) }

func (s StepTimes) overhead(gated []time.Duration) float64 {
	if len(s.Plain) == 0 {
		return 0
	}
	plain := slices.Clone(s.Plain)
	slices.Sort(plain)
	median := plain[len(plain)/2]
	var extra, total time.Duration
	for _, d := range gated {
		extra += max(0, d-median)
	}
	for _, group := range [][]time.Duration{s.Plain, s.WarmUp, s.Controller} {
		for _, d := range group {
			total += d
		}
	}
	if total == 0 {
		return 0
	}
	return float64(extra) / float64(total)
}

// NewMonitor creates a monitor of o's state in store. A store resumed from a checkpoint already
// holds counters: the monitor starts from them, so that it logs only what happens from now on.
func (o *Optimizer) NewMonitor(store *model.Store) *Monitor {
	m := &Monitor{opt: o, store: store}
	if store != nil {
		if r, err := o.Report(store); err == nil {
			m.last, m.seen, m.skipped, m.restarts, m.kept, m.fullUpdates = r, r.SVDs, r.SkippedSteps, r.LossRestarts, r.BasesKept, r.FullUpdates
		}
	}
	return m
}

// ObserveTimed is Observe after a step that took elapsed (its TrainStep call), and files the
// time in Times by what the step ran.
func (m *Monitor) ObserveTimed(elapsed time.Duration) error {
	before, builds := m.last, m.opt.Builds()
	if builds != m.builds {
		// This step built (compiled) the step graph: its time says nothing of the controller.
		m.builds = builds
		return m.Observe()
	}
	if err := m.Observe(); err != nil {
		return err
	}
	switch r := m.last; {
	case r.Steps <= int64(r.WarmUp):
		m.Times.WarmUp = append(m.Times.WarmUp, elapsed)
	case r.Checks > before.Checks || r.SVDs > before.SVDs:
		m.Times.Controller = append(m.Times.Controller, elapsed)
	default:
		m.Times.Plain = append(m.Times.Plain, elapsed)
	}
	return nil
}

// Observe reads the state after a step and records (and logs) SVDs since the last call. Called
// after every step it sees every event; called less often it sees the last one and the counts.
func (m *Monitor) Observe() error {
	r, err := m.opt.Report(m.store)
	if err != nil {
		return err
	}
	sample := Sample{Step: r.Steps, Checked: r.Checks > m.last.Checks, Learned: r.SVDs > m.last.SVDs,
		Residual: r.LastCheckResidual, Curvature: r.Curvature}
	for _, v := range r.Variables {
		sample.MeanRank += float64(v.Rank) / float64(len(r.Variables))
	}
	m.History = append(m.History, sample)
	m.record(r) // before m.last moves on: it compares with the last observation
	m.last = r
	if m.Trace != nil {
		if err := m.writeTrace(r); err != nil {
			return err
		}
	}
	if m.Trainer != nil {
		changes, err := m.opt.AdaptRanks(m.Trainer)
		for _, c := range changes {
			m.RankChanges = append(m.RankChanges, c)
			if m.Logf != nil {
				m.Logf("subspace: %s", c)
			}
		}
		return err
	}
	return nil
}

// Last returns the report read by the last Observe.
func (m *Monitor) Last() Report { return m.last }

// record logs what changed since the last observation: skipped steps, declined bases, the bases
// learned.
func (m *Monitor) record(r Report) {
	m.logGuard(r)
	pol := m.opt.cfg.policy
	if r.FullUpdates > m.fullUpdates {
		if m.Logf != nil {
			m.Logf("subspace: step %d: full update of %s (rule full-update: every %d checks, variables in turn)", r.Steps, r.LastFullUpdate, pol.FullUpdateEvery)
		}
		m.fullUpdates = r.FullUpdates
	}
	if r.SVDs == m.seen {
		return
	}
	if r.SVDs > m.seen+1 && m.Logf != nil {
		m.Logf("subspace: %d bases learned between observations; the last one:", r.SVDs-m.seen-1)
	}
	m.seen = r.SVDs
	e := m.learningEvent(r)
	m.Events = append(m.Events, e)
	if m.Logf != nil {
		m.Logf("subspace: %s", e)
	}
}

// logGuard says what the guard did since the last observation: steps skipped, a divergence
// held, a new level of the loss taken, basis updates declined.
func (m *Monitor) logGuard(r Report) {
	if r.SkippedSteps > m.skipped {
		if m.Logf != nil {
			m.Logf("subspace: %d step(s) skipped by step %d: non-finite or exploding loss or gradient; weights, optimizer state and bases kept", r.SkippedSteps-m.skipped, r.Steps)
		}
		m.skipped = r.SkippedSteps
	}
	if r.DivergenceHeld && !m.last.DivergenceHeld && m.Logf != nil {
		m.Logf("subspace: step %d: %s", r.Steps, divergenceAdvice)
	}
	if r.LossRestarts > m.restarts {
		if m.Logf != nil {
			m.Logf("subspace: step %d: the loss stayed above %g× its smoothed value for %d steps: taken as a new level (step applied, smoothed loss restarted from it)",
				r.Steps, m.opt.cfg.policy.ExplodeFactor, ExplodePatience)
		}
		m.restarts = r.LossRestarts
	}
	if r.BasesKept > m.kept {
		if m.Logf != nil {
			m.Logf("subspace: %d basis update(s) declined by step %d: zero or non-finite gradient; previous basis kept", r.BasesKept-m.kept, r.Steps)
		}
		m.kept = r.BasesKept
	}
}

// learningEvent describes the last learning of the bases in r: when, why, and how much of the
// gradients the new bases hold.
func (m *Monitor) learningEvent(r Report) Event {
	pol := m.opt.cfg.policy
	e := Event{Step: r.LastSVDStep, Cause: r.LastSVDCause}
	var learned int
	for _, v := range r.Variables {
		if v.Valid {
			e.ExplainedVariance += v.ExplainedVariance
			learned++
		} else {
			e.WithoutBasis = append(e.WithoutBasis, v.Path)
		}
	}
	if learned > 0 {
		e.ExplainedVariance /= float64(learned)
	}
	// A variable that had no basis at the last observation is replaced at the next check
	// whatever its residual's growth (internal/step/controller.go): say so, not the growth rule.
	var hadNone []string
	for _, v := range m.last.Variables {
		if !v.Valid {
			hadNone = append(hadNone, v.Path)
		}
	}
	if m.opt.cfg.mode == Matrix {
		e.FastSteps = m.opt.cfg.warmUp
	}
	switch e.Cause {
	case CauseResidual:
		e.Residual = r.LastCheckResidual
		if len(hadNone) > 0 && m.opt.cfg.mode == Temporal {
			e.Signal = fmt.Sprintf("residual %.3f: %s had no basis (never learned, or damaged)", r.LastCheckResidual, strings.Join(hadNone, ", "))
			break
		}
		e.Signal = fmt.Sprintf("residual %.3f > %g, grown by more than %g since the basis's first check", r.LastCheckResidual, pol.ResidualThreshold, pol.DriftMargin)
	case CauseLoss:
		e.Signal = fmt.Sprintf("smoothed loss %.4g not falling for %d checks (patience %d)", r.LossEMA, pol.LossPatience, pol.LossPatience)
	case CauseCurvature:
		e.Signal = fmt.Sprintf("curvature jumped to %.1f× its smoothed magnitude (factor %g)", r.CurvaturePeak, pol.CurvatureFactor)
	}
	return e
}

// ProgressMetric is a column for GoMLX's progress bar (commandline.AttachProgressBar(loop,
// mon.ProgressMetric())): the projector's state as of the last observation, in one short value.
// With a progress bar on the terminal, set Logf to nil (or to a file's logger) and read the
// events here and in Events: log lines tear the bar.
func (m *Monitor) ProgressMetric() func() (name, value string) {
	return func() (string, string) {
		r := m.last
		switch {
		case r.Disabled:
			return "subspace", "disabled"
		case r.NothingProjected:
			return "subspace", "nothing projected"
		}
		value := fmt.Sprintf("refreshes %d, residual %.2f", r.Refreshes, r.LastCheckResidual)
		if r.SkippedSteps > 0 {
			value += fmt.Sprintf(", skipped %d", r.SkippedSteps)
		}
		if r.RankChanges > 0 {
			value += ", ranks " + r.Ranks()
		}
		return "subspace", value
	}
}

// AttachToLoop makes the loop call Observe after every step, with the loop's trainer (so the
// rank rule can act).
func (m *Monitor) AttachToLoop(loop *train.Loop) {
	m.Trainer = loop.Trainer
	loop.OnStep("subspace monitor", train.Priority(0), func(_ *train.Loop, _ []*tensors.Tensor) error {
		return m.Observe()
	})
}
