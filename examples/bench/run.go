package main

import (
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/gomlx/compute"
	"github.com/gradsub/gradsub/hooks"
)

// analyticRatio is the step-FLOP ratio the direct path allows for a chain of dense layers:
// forward and ∂x are unchanged; each projected ∂W (2·B·m·n) becomes 2·B·r·(m+n), plus the lift
// 2·r·m·n; gated work is left out.
func analyticRatio(c Config) float64 {
	dims := append(append([]int{c.Input}, c.Hidden...), c.Classes)
	b := float64(c.Batch)
	var stock, sub float64
	for i := 0; i+1 < len(dims); i++ {
		m, n := float64(dims[i]), float64(dims[i+1])
		forward, dW, dx := 2*b*m*n, 2*b*m*n, 2*b*m*n
		if i == 0 {
			dx = 0 // nothing needs the input's gradient
		}
		stock += forward + dW + dx
		r := float64(c.rankOf(dims[i], dims[i+1]))
		projected := (c.Projected == nil || i == 0) && r > 0
		if projected {
			sub += forward + dx + 2*b*r*(m+n) + 2*r*m*n
		} else {
			sub += forward + dW + dx
		}
	}
	return sub / stock
}

// run measures one config: stock and subspace steps timed in interleaved blocks, then the
// FLOPs, ops and optimizer state of each.
func run(backend compute.Backend, c Config, feed string, blocks, blockSteps int, logf func(string, ...any)) (Result, error) {
	res := Result{Config: c.Name, Backend: backend.Name(), Feed: feed}
	stock := newVariant(backend, c, false, false)
	sub := newVariant(backend, c, true, false)
	frozen := newVariant(backend, c, false, true)
	next, stop, err := newFeeder(backend, c, feed, rand.New(rand.NewPCG(1, 2)))
	if err != nil {
		return res, err
	}
	defer stop()
	// Compile and warm up both (the subspace variant past its warm-up phase).
	warm := sub.opt.Config().WarmUpSteps() + 5
	for _, v := range []*variant{stock, sub} {
		if _, err := v.steps(next, warm); err != nil {
			return res, err
		}
	}
	if _, err := frozen.steps(next, 1); err != nil { // for its FLOPs only
		return res, err
	}
	logf("%s: %s", c.Name, strings.TrimSpace(sub.opt.PlanString()))
	if err := timeBlocks(&res, stock, sub, next, blocks, blockSteps, logf); err != nil {
		return res, err
	}
	if err := countWork(&res, c, stock, sub, frozen); err != nil {
		return res, err
	}
	return res, nil
}

// timeBlocks times stock and sub in interleaved blocks, in rotating order, so that the
// machine's drift falls on both alike, and sets res's step times and their ratio's spread.
func timeBlocks(res *Result, stock, sub *variant, next feeder, blocks, blockSteps int, logf func(string, ...any)) error {
	times := map[*variant]time.Duration{}
	var ratios []float64
	for i := range blocks {
		order := []*variant{stock, sub}
		if i%2 == 1 {
			order = []*variant{sub, stock}
		}
		block := map[*variant]time.Duration{}
		for _, v := range order {
			d, err := v.steps(next, blockSteps)
			if err != nil {
				return err
			}
			times[v] += d
			block[v] = d
		}
		ratios = append(ratios, float64(block[sub])/float64(block[stock]))
		logf("%s: block %d of %d: stock %.2f ms/step, subspace %.2f ms/step", res.Config, i+1, blocks,
			msPerStep(times[stock], (i+1)*blockSteps), msPerStep(times[sub], (i+1)*blockSteps))
	}
	n := blocks * blockSteps
	res.StockStepMs, res.SubspaceStepMs = msPerStep(times[stock], n), msPerStep(times[sub], n)
	res.StepTimeRatio = res.SubspaceStepMs / res.StockStepMs
	res.BlockRatioMin, res.BlockRatioMedian, res.BlockRatioMax = spread(ratios)
	return nil
}

// countWork sets res's FLOPs, ops, optimizer state and plan counts from the compiled steps of
// stock, sub and frozen (stock with the projected layers frozen: the other layers' share).
func countWork(res *Result, c Config, stock, sub, frozen *variant) error {
	fs, err := stock.opt.StepFLOPs()
	if err != nil {
		return err
	}
	fp, err := sub.opt.StepFLOPs()
	if err != nil {
		return err
	}
	ff, err := frozen.opt.StepFLOPs()
	if err != nil {
		return err
	}
	res.StockGradientFLOPs, res.SubspaceGradFLOPs = fs.Gradient, fp.Gradient
	res.StockOps, res.SubspaceOps = fs.StepOps(), fp.StepOps()
	res.ProjectorOpsPerStep = res.SubspaceOps - res.StockOps
	res.StockScalarOps, res.SubspaceScalarOps = fs.Ops.Scalar, fp.Ops.Scalar
	// The projected layers' share: total gradient FLOPs less the other layers' (the frozen run).
	res.ProjectedGradRatio = 1 // nothing projected (the automatic rank may leave every layer out)
	if fs.Gradient > ff.Gradient {
		res.ProjectedGradRatio = float64(fp.Gradient-ff.Gradient) / float64(fs.Gradient-ff.Gradient)
	}
	report, err := sub.opt.Report(sub.store)
	if err != nil {
		return err
	}
	gatedPerStep := 0.0 // nothing projected: the projector keeps no step count
	if report.Steps > 0 {
		gatedPerStep = float64(fp.Gated(report)) / float64(report.Steps)
	}
	res.StepFLOPsRatio = (float64(fp.Step()) + gatedPerStep) / float64(fs.Step())
	res.AnalyticFLOPsRatio = analyticRatio(c)
	res.StockStateBytes, res.SubspaceStateBytes = stateBytes(stock.store, c), stateBytes(sub.store, c)
	res.StateBytesRatio = 1
	if res.StockStateBytes > 0 {
		res.StateBytesRatio = float64(res.SubspaceStateBytes) / float64(res.StockStateBytes)
	}
	for _, e := range sub.opt.Plan() {
		if e.Route != hooks.RouteFull {
			res.ProjectedVariables++
		}
		if e.Route == hooks.RouteDirect {
			res.DirectPathVariables++
		}
	}
	return nil
}

// spread returns the smallest, median and largest of values (not empty).
func spread(values []float64) (lo, median, hi float64) {
	sorted := slices.Sorted(slices.Values(values))
	n := len(sorted)
	median = sorted[n/2]
	if n%2 == 0 {
		median = (sorted[n/2-1] + sorted[n/2]) / 2
	}
	return sorted[0], median, sorted[n-1]
}

func msPerStep(d time.Duration, steps int) float64 {
	return float64(d.Microseconds()) / 1000 / float64(steps)
}
