package hooks

import (
	"fmt"
	"path"
	"strings"

	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/support/exceptions"
	"github.com/gradsub/gradsub/hooks/internal/direct"
	"github.com/gradsub/gradsub/hooks/internal/step"
	"github.com/gradsub/gradsub/projector"
)

// The plan's decisions: for each trainable variable, whether it is projected, on which route,
// side and rank, and in words why (plan.go formats them).

// makePlan decides each trainable variable's path, and finds the products of the direct ones.
// A selected variable that cannot be projected at all is an error naming it and the fix.
// With directPath false (the trainer gave full gradients) no variable takes the direct path.
func (o *Optimizer) makePlan(scope *model.Scope, g *Graph, trainables []*model.Variable, directPath bool) ([]PlanEntry, []*direct.Product) {
	cfg := &o.cfg
	plan := make([]PlanEntry, len(trainables))
	products := make([]*direct.Product, len(trainables))
	selected, projected := 0, 0
	var unfit []string // selected variables the rank does not fit
	pl := planning{scope: scope, g: g, roles: direct.NewRoles(g, trainables), directPath: directPath}
	for i, v := range trainables {
		e, p, isSelected, unfitWhy := o.planVariable(pl, v)
		plan[i], products[i] = e, p
		if isSelected {
			selected++
		}
		if e.Route != RouteFull {
			projected++
		}
		if unfitWhy != "" {
			unfit = append(unfit, unfitWhy)
		}
	}
	if projected == 0 && len(unfit) > 0 {
		exceptions.Panicf("hooks.Subspace: no selected variable takes Rank(%d): %s; lower the rank, or select wider variables", cfg.rank, strings.Join(unfit, "; "))
	}
	if selected == 0 {
		var paths []string
		for _, v := range trainables {
			paths = append(paths, fmt.Sprintf("%s %s", v.Path(), v.Shape()))
		}
		exceptions.Panicf("hooks.Subspace: the selection (%s) matches none of the %d trainable variables %v; "+
			"choose some with Variables(paths...), Matching(regexp) or Select(fn), or use Enabled(false) to train without projection",
			cfg.selectDesc, len(trainables), paths)
	}
	// The automatic rank leaves out what would lose quality or save nothing: where that is every
	// matrix (a small model, or small batches), the step is the base optimizer's alone (build.go),
	// and the plan and Report say so. A rank the user set that fits
	// no matrix is an error.
	if projected == 0 && (cfg.rank > 0 || cfg.explicit || cfg.mode != Matrix) {
		exceptions.Panicf("hooks.Subspace: none of the %d selected variables can be projected at %s:\n%s(lower the rank, or choose other variables)", selected, cfg.rankDesc(), planLines(plan))
	}
	return plan, products
}

// planning is what the plan's per-variable decisions share.
type planning struct {
	scope      *model.Scope
	g          *Graph
	roles      *direct.Roles
	directPath bool // the direct path is open (the trainer did not give full gradients)
}

// planVariable decides one trainable variable's entry, and its product on the direct path.
// selected says the selection picked it; unfit names a selected variable that the rank does not
// fit (it keeps full updates; an error only if no variable takes the rank).
func (o *Optimizer) planVariable(pl planning, v *model.Variable) (e PlanEntry, p *direct.Product, selected bool, unfit string) {
	cfg := &o.cfg
	e = PlanEntry{Variable: v.Path(), Shape: v.Shape(), Route: RouteFull}
	if !cfg.selectFn(v) {
		e.Why = notSelectedWhy(cfg, v)
		return e, nil, false, ""
	}
	if v.Shape().Size() == 0 {
		// A zero-size dimension: nothing to project (and no rows or columns to divide by).
		e.Why = fmt.Sprintf("it has no elements (shape %s): nothing to project", v.Shape())
		return e, nil, true, ""
	}
	if err := o.checkProjectable(v); err != nil {
		exceptions.Panicf("%v", err)
	}
	if cfg.mode == Temporal {
		k := cfg.temporalRank()
		e.Rank = k
		e.Route, e.Why = RouteTemporal, fmt.Sprintf("flattened gradient (%d elements) on a temporal basis", v.Shape().Size())
		if size := v.Shape().Size(); size >= temporalElementsPerDirection*k && v.Shape().Rank() >= 2 {
			// A few warm-up gradients span almost nothing of a large variable's later ones: a
			// one-block attention LM's 64×64 matrices stayed at chance (residual 0.93–0.99).
			e.Why += fmt.Sprintf("; large for %d temporal directions (%d elements each): if its residual stays near 1, use Mode(hooks.Matrix)", k, size/k)
		}
		return e, nil, true, ""
	}
	p, unfit = o.planMatrix(pl, v, &e)
	return e, p, true, unfit
}

// matrixRoute is how a matrix-mode variable's gradient would be projected: on the direct path
// (p, the product that reads it) or post-hoc (e.view), as an m×n matrix, with rows rows a step.
type matrixRoute struct {
	p       *direct.Product
	m, n    int
	rows    int    // the product's rows per step (0: post-hoc), for the automatic rank's cost cap
	postHoc string // why not direct
}

// routeOf sets e's route and reason for the matrix subspace: direct where a product reads the
// weight (and the trainer gives no full gradients), post-hoc otherwise.
func routeOf(pl planning, v *model.Variable, e *PlanEntry) matrixRoute {
	var r matrixRoute
	r.p, r.postHoc = direct.FindProduct(pl.g, v.NodeValue(pl.g))
	if r.p != nil {
		r.rows = r.p.Output.Shape().Size() / r.p.N
	}
	if !pl.directPath {
		r.p, r.postHoc = nil, "the trainer gives full gradients (AccumulateGradients)"
	}
	if r.p != nil {
		r.m, r.n = r.p.M, r.p.N
		e.Route, e.Why = RouteDirect, r.p.Describe()
	} else {
		view := direct.ViewOf(pl.g, v.NodeValue(pl.g))
		r.m, r.n = view.M, view.N
		e.view = view
		e.Route, e.Why = RoutePostHoc, fmt.Sprintf("full gradient projected, as %s: %s", view.Desc, r.postHoc)
	}
	return r
}

// planMatrix decides a matrix-mode variable's entry: its route, side and rank, or why it keeps
// full updates (e.Route RouteFull). It returns the product on the direct path, and unfit where
// the rank does not fit the variable.
func (o *Optimizer) planMatrix(pl planning, v *model.Variable, e *PlanEntry) (p *direct.Product, unfit string) {
	cfg := &o.cfg
	r := routeOf(pl, v, e)
	m, n, rows := r.m, r.n, r.rows
	leaveOut := func(why string) (*direct.Product, string) {
		e.Route, e.Why = RouteFull, why
		return nil, ""
	}
	if !cfg.explicit { // a role rules a variable out whatever its size or rank
		if role := pl.roles.Of(v); role != "" {
			return leaveOut("left out by the default selection: " + role)
		}
	}
	if e.Route == RoutePostHoc && cfg.rank == 0 && !cfg.explicit {
		// Its gradient is built anyway: projecting it adds products and replaces none, so
		// the one option, which projects only where that saves work, leaves it out.
		if k := cfg.autoRank(m, n, 0); k > 0 {
			return leaveOut(fmt.Sprintf("does not pay: its full gradient is built anyway (%s), so projecting it (rank %d) would add %s a step and save none: left out (set Rank to project it for its optimizer state)",
				r.postHoc, k, HumanFLOPs(2*matrixWork(m, n, 0, k, cfg.complementOf(min(m, n), k), nil))))
		}
	}
	side := cfg.side.of(m, n)
	rank, why := o.chooseRank(pl, v, r)
	e.Rank = rank
	if why != "" {
		return leaveOut(why)
	}
	if why, unfit := o.fitRank(v, r, side, rank); why != "" {
		e.Route, e.Why = RouteFull, why
		return nil, unfit
	}
	e.Rank = o.currentRank(pl.scope, v, rank)
	if rows > 0 && e.Rank > rows {
		// One step's gradient has rank ≤ rows: the basis stays orthonormal, and the
		// directions a step does not span are gathered over steps by tracking.
		e.Why += fmt.Sprintf("; rank %d above the %d rows of a step: one step's gradient spans at most %d of its directions, the others are gathered over steps", e.Rank, rows, rows)
	}
	e.rows, e.cols = m, n
	e.Side = side
	e.Complement = cfg.complementOf(side.Rows(m, n), e.Rank)
	e.ProjectorFLOPs, e.ReplacedFLOPs = 2*matrixWork(m, n, rows, e.Rank, e.Complement, r.p), 0
	if r.p != nil {
		e.ReplacedFLOPs = 2 * int64(rows) * int64(m) * int64(n)
	}
	return r.p, ""
}

// chooseRank is a matrix's rank: the configured one, the automatic one (rankOf), or the named
// share for a variable the user named; with why it is left out (the rank then as the plan
// reports it).
func (o *Optimizer) chooseRank(pl planning, v *model.Variable, r matrixRoute) (rank int, why string) {
	cfg := &o.cfg
	m, n, rows := r.m, r.n, r.rows
	rank = cfg.rankOf(m, n, rows)
	if rank > 0 && cfg.rank == 0 && !cfg.explicit && pl.roles.IsConvKernel(v) {
		// The automatic rank's share does not hold on kernels, and the share that does
		// would not pay (kernelAutoRankWhy).
		return 0, kernelAutoRankWhy
	}
	if rank == 0 && cfg.explicit { // named by the user: projected at the share, whatever it costs
		rank = cfg.namedRank(min(m, n))
	}
	if rank == 0 {
		why = autoRankLeftOutWhy(cfg, m, n, rows)
		if b := pl.scope.Store().GetVariable(basisPath(pl.scope, v)); b != nil && b.Shape().Rank() == 2 {
			// A checkpoint that projected it: say the basis is unused, and how to keep it.
			why += fmt.Sprintf("; the store holds its basis at rank %d (from a checkpoint), unused now: resume with Rank(%d) to go on projecting it", b.Shape().Dim(1), b.Shape().Dim(1))
		}
		return 0, why
	}
	if cfg.rank == 0 && !cfg.explicit && r.p != nil && r.p.WeightReaders != "" {
		// The automatic rank's cost cap counts the regularizer's projection too.
		if work := matrixWork(m, n, rows, rank, cfg.complementOf(cfg.side.of(m, n).Rows(m, n), rank), r.p); float64(work) > AutoRankWorkShare*float64(rows)*float64(m)*float64(n) {
			return 0, fmt.Sprintf("too small to pay: at %d rows per step, the automatic rank (%d), with its regularizer's gradient projected, would cost the projector more than %g of ∂W: left out, as a lower rank costs quality (set Rank to project it anyway)", rows, rank, AutoRankWorkShare)
		}
	}
	return rank, ""
}

// autoRankLeftOutWhy says, for the plan, why the automatic rank leaves a matrix out.
func autoRankLeftOutWhy(cfg *Config, m, n, rows int) string {
	_, why, k := cfg.autoRankWhy(m, n, rows)
	switch why {
	case sideTooSmall:
		return fmt.Sprintf("too small to pay: its smaller side (%d) is ≤ %d, the automatic rank's least (fewer directions cost quality): a rank that keeps quality would not shrink it (set Rank to project it anyway)", min(m, n), cfg.leastAutoRank(min(m, n)))
	case liftCapped:
		s := cfg.complementOf(min(m, n), k)
		return fmt.Sprintf("too few rows to pay: at %d rows per step, lifting the automatic rank's %d directions (%d + %d random) would cost more than %g of ∂W by itself (the batch-independent part of the projector's work): left out, as a lower rank costs quality (set Rank to project it anyway)",
			rows, k+s, k, s, AutoRankLiftShare)
	}
	return fmt.Sprintf("too small to pay: at %d rows per step, the automatic rank (%d) would cost the projector more than %g of ∂W: left out, as a lower rank costs quality (set Rank to project it anyway)", rows, k, AutoRankWorkShare)
}

// fitRank says why a rank does not fit a matrix (then it keeps full updates), and for a rank
// the matrix cannot take at all, unfit: the line of the error raised if no variable takes it.
func (o *Optimizer) fitRank(v *model.Variable, r matrixRoute, side projector.Side, rank int) (why, unfit string) {
	m, n := r.m, r.n
	if !o.cfg.explicit && min(m, n) <= rank {
		// The default selection leaves out matrices that a rank-k basis would not shrink.
		return fmt.Sprintf("too small to pay: its smaller side (%d) is ≤ Rank(%d), so a basis would not shrink it", min(m, n), rank), ""
	}
	if err := projector.CheckMatrix(m, n, rank, side); err != nil || side.Rows(m, n) == rank {
		// A selection by name or pattern often spans layers of several widths: one the rank
		// does not fit (or fits only as a full-rank basis, which saves nothing) keeps full
		// updates; it is an error only when no selected variable takes the rank (makePlan).
		if err == nil {
			err = fmt.Errorf("rank %d is the whole %s side of the %d×%d weight: a basis would not shrink it", rank, side, m, n)
		}
		return fmt.Sprintf("too small for the rank: %v (full updates)", err),
			fmt.Sprintf("variable %s %s (as a %d×%d matrix): %v", v.Path(), v.Shape(), m, n, err)
	}
	return "", ""
}

// kernelAutoRankWhy is why the automatic rank leaves a convolution kernel out. On a conv net of
// 128-channel kernels (internal/quality's WideConvNet) a quarter of the output side, the share's
// floor, cost 1.9× stock's eval loss, half of it 1.35×; three quarters kept stock's. At three
// quarters of its output side the kernel's coefficient alone costs at least 0.75 of ∂K, above
// AutoRankWorkShare: no automatic rank both holds and pays.
const kernelAutoRankWhy = "a convolution kernel: the automatic rank leaves kernels out (a quarter of a 128-channel kernel's output side cost 1.9× stock's eval loss, three quarters held, and at three quarters the projector costs more than 0.7 of ∂K); set Rank to project it"

// temporalElementsPerDirection: above this many elements per temporal direction the plan
// recommends the matrix subspace.
const temporalElementsPerDirection = 256

// currentRank is a matrix-projected variable's rank: the configured one, unless the rank rule
// changed it (AdaptRanks) or a checkpoint holds its basis at another rank. A checkpoint's rank
// that differs from the configured one is kept when the rank may adapt (RankBounds); otherwise
// it is an error naming both and the ways out (it used to be ignored silently).
func (o *Optimizer) currentRank(scope *model.Scope, v *model.Variable, configured int) int {
	o.mu.Lock()
	r, ok := o.ranks[v.Path()]
	o.mu.Unlock()
	if ok {
		return r
	}
	basis := scope.Store().GetVariable(basisPath(scope, v))
	if basis != nil && basis.Shape().Rank() == 2 {
		stored := basis.Shape().Dim(1)
		if stored != configured && !o.cfg.policy.Adaptive(o.cfg.rank) {
			what := fmt.Sprintf("Rank(%d) is configured", configured)
			if o.cfg.rank == 0 {
				what = fmt.Sprintf("the automatic rank is %d", configured)
			}
			exceptions.Panicf("hooks.Subspace: the store holds %s's basis at rank %d (from a checkpoint), but %s: "+
				"resume with Rank(%d), let the rank change with RankBounds(lo, hi), or delete the projector's state (Optimizer.Clear) to learn new bases",
				v.Path(), stored, what, stored)
		}
		return stored
	}
	return configured
}

// basisPath is where a matrix-projected variable's basis lives.
func basisPath(scope *model.Scope, v *model.Variable) string {
	return step.SvBasis.OfVariable(path.Join(scope.Scope(), StateScope), v.Path())
}

// checkProjectable explains why a selected variable cannot be projected, if it cannot.
func (o *Optimizer) checkProjectable(v *model.Variable) error {
	shape := v.Shape()
	switch {
	case !v.DType().IsFloat():
		return fmt.Errorf("hooks.Subspace: variable %s has dtype %s: only float variables can be projected (leave it out of the selection)", v.Path(), v.DType())
	case o.cfg.mode == Matrix && shape.Rank() < 2:
		return fmt.Errorf("hooks.Subspace: variable %s %s is not a matrix: the matrix subspace needs rank ≥ 2 (leave it out of the selection, or use Mode(hooks.Temporal))", v.Path(), shape)
	case o.cfg.mode == Temporal && shape.Size() < o.cfg.temporalRank():
		return fmt.Errorf("hooks.Subspace: variable %s %s has %d elements, fewer than Rank(%d): lower the rank or leave it out of the selection", v.Path(), shape, shape.Size(), o.cfg.temporalRank())
	}
	return nil
}

func planLines(plan []PlanEntry) string {
	var s string
	for _, e := range plan {
		if e.Route == RouteFull && e.Why != "" {
			s += fmt.Sprintf("  %s %v: %s\n", e.Variable, e.Shape.Dimensions, e.Why)
		}
	}
	return s
}
