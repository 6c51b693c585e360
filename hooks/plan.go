package hooks

import (
	"fmt"
	"path"
	"strings"
	"unicode/utf8"

	"github.com/gomlx/compute/shapes"
	"github.com/gomlx/compute/support/humanize"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/support/exceptions"
	"github.com/gradsub/gradsub/internal/upstream"
	"github.com/gradsub/gradsub/projector"
)

// makePlan decides each trainable variable's path, and finds the products of the direct ones.
// A selected variable that cannot be projected at all is an error naming it and the fix.
// With direct false (the trainer gave full gradients) no variable takes the direct path.
func (o *Optimizer) makePlan(scope *model.Scope, g *Graph, trainables []*model.Variable, direct bool) ([]PlanEntry, []*product) {
	cfg := &o.cfg
	plan := make([]PlanEntry, len(trainables))
	products := make([]*product, len(trainables))
	selected, projected := 0, 0
	var unfit []string // selected variables the rank does not fit
	roles := newWeightRoles(g, trainables)
	for i, v := range trainables {
		e := PlanEntry{Variable: v.Path(), Shape: v.Shape(), Route: RouteFull}
		if !cfg.selectFn(v) {
			e.Why = notSelectedWhy(cfg, v)
			plan[i] = e
			continue
		}
		selected++
		if v.Shape().Size() == 0 {
			// A zero-size dimension: nothing to project (and no rows or columns to divide by).
			e.Why = fmt.Sprintf("it has no elements (shape %s): nothing to project", v.Shape())
			plan[i] = e
			continue
		}
		if err := o.checkProjectable(v); err != nil {
			exceptions.Panicf("%v", err)
		}
		projected++
		if cfg.mode == Temporal {
			k := cfg.temporalRank()
			e.Rank = k
			e.Route, e.Why = RouteTemporal, fmt.Sprintf("flattened gradient (%d elements) on a temporal basis", v.Shape().Size())
			if size := v.Shape().Size(); size >= temporalElementsPerDirection*k && v.Shape().Rank() >= 2 {
				// A few warm-up gradients span almost nothing of a large variable's later ones: a
				// one-block attention LM's 64×64 matrices stayed at chance (residual 0.93–0.99).
				e.Why += fmt.Sprintf("; large for %d temporal directions (%d elements each): if its residual stays near 1, use Mode(hooks.Matrix)", k, size/k)
			}
			plan[i] = e
			continue
		}
		p, why := findProduct(g, v.NodeValue(g))
		rows := 0 // the product's rows per step, for the automatic rank's cost cap
		if p != nil {
			rows = p.node.Shape().Size() / p.n
		}
		if !direct {
			p, why = nil, "the trainer gives full gradients (AccumulateGradients)"
		}
		var m, n int
		if p != nil {
			m, n = p.m, p.n
			e.Route, e.Why = RouteDirect, p.describe()
		} else {
			view := viewOf(g, v.NodeValue(g))
			m, n = view.m, view.n
			e.view = view
			e.Route, e.Why = RoutePostHoc, fmt.Sprintf("full gradient projected, as %s: %s", view.desc, why)
		}
		if !cfg.explicit { // a role rules a variable out whatever its size or rank
			if role := roles.of(v); role != "" {
				e.Route, e.Why = RouteFull, "left out by the default selection: "+role
				plan[i] = e
				projected--
				continue
			}
		}
		if e.Route == RoutePostHoc && cfg.rank == 0 && !cfg.explicit {
			// Its gradient is built anyway: projecting it adds products and replaces none, so
			// the one option, which projects only where that saves work, leaves it out.
			r := cfg.autoRank(m, n, 0)
			if r > 0 {
				e.Route, e.Why = RouteFull, fmt.Sprintf("does not pay: its full gradient is built anyway (%s), so projecting it (rank %d) would add %s a step and save none: left out (set Rank to project it for its optimizer state)",
					why, r, HumanFLOPs(2*matrixWork(m, n, 0, r, cfg.complementOf(min(m, n), r), nil)))
				plan[i] = e
				projected--
				continue
			}
		}
		side := cfg.side.of(m, n)
		rank := cfg.rankOf(m, n, rows)
		e.Rank = rank
		if rank > 0 && cfg.rank == 0 && !cfg.explicit && roles.isConvKernel(v) {
			// The automatic rank's share does not hold on kernels, and the share that does
			// would not pay (kernelAutoRankWhy).
			e.Route, e.Why, e.Rank = RouteFull, kernelAutoRankWhy, 0
			plan[i] = e
			projected--
			continue
		}
		if rank == 0 && cfg.explicit { // named by the user: projected at the share, whatever it costs
			rank = cfg.namedRank(min(m, n))
			e.Rank = rank
		}
		if rank == 0 {
			e.Route = RouteFull
			if least := cfg.leastAutoRank(min(m, n)); min(m, n) <= least {
				e.Why = fmt.Sprintf("too small to pay: its smaller side (%d) is ≤ %d, the automatic rank's least (fewer directions cost quality): a rank that keeps quality would not shrink it (set Rank to project it anyway)", min(m, n), least)
			} else {
				e.Why = fmt.Sprintf("too small to pay: at %d rows per step, the automatic rank (%d) would cost the projector more than %g of ∂W: left out, as a lower rank costs quality (set Rank to project it anyway)", rows, cfg.autoRank(m, n, 0), AutoRankWorkShare)
			}
			if b := scope.Store().GetVariable(basisPath(scope, v)); b != nil && b.Shape().Rank() == 2 {
				// A checkpoint that projected it: say the basis is unused, and how to keep it.
				e.Why += fmt.Sprintf("; the store holds its basis at rank %d (from a checkpoint), unused now: resume with Rank(%d) to go on projecting it", b.Shape().Dim(1), b.Shape().Dim(1))
			}
			plan[i] = e
			projected--
			continue
		}
		if cfg.rank == 0 && !cfg.explicit && p != nil && p.weightReaders != "" {
			// The automatic rank's cost cap counts the regularizer's projection too.
			if work := matrixWork(m, n, rows, rank, cfg.complementOf(side.Rows(m, n), rank), p); float64(work) > AutoRankWorkShare*float64(rows)*float64(m)*float64(n) {
				e.Route, e.Rank = RouteFull, 0
				e.Why = fmt.Sprintf("too small to pay: at %d rows per step, the automatic rank (%d), with its regularizer's gradient projected, would cost the projector more than %g of ∂W: left out, as a lower rank costs quality (set Rank to project it anyway)", rows, rank, AutoRankWorkShare)
				plan[i] = e
				projected--
				continue
			}
		}
		if !cfg.explicit && min(m, n) <= rank {
			// The default selection leaves out matrices that a rank-k basis would not shrink.
			e.Route, e.Why = RouteFull, fmt.Sprintf("too small to pay: its smaller side (%d) is ≤ Rank(%d), so a basis would not shrink it", min(m, n), rank)
			plan[i] = e
			projected--
			continue
		}
		if err := projector.CheckMatrix(m, n, rank, side); err != nil || side.Rows(m, n) == rank {
			// A selection by name or pattern often spans layers of several widths: one the rank
			// does not fit (or fits only as a full-rank basis, which saves nothing) keeps full
			// updates; it is an error only when no selected variable takes the rank (below).
			if err == nil {
				err = fmt.Errorf("rank %d is the whole %s side of the %d×%d weight: a basis would not shrink it", rank, side, m, n)
			}
			e.Route, e.Why = RouteFull, fmt.Sprintf("too small for the rank: %v (full updates)", err)
			unfit = append(unfit, fmt.Sprintf("variable %s %s (as a %d×%d matrix): %v", v.Path(), v.Shape(), m, n, err))
			plan[i] = e
			projected--
			continue
		}
		e.Rank = o.currentRank(scope, v, rank)
		if rows > 0 && e.Rank > rows {
			// One step's gradient has rank ≤ rows: the basis stays orthonormal, and the
			// directions a step does not span are gathered over steps by tracking.
			e.Why += fmt.Sprintf("; rank %d above the %d rows of a step: one step's gradient spans at most %d of its directions, the others are gathered over steps", e.Rank, rows, rows)
		}
		e.rows, e.cols = m, n
		e.Side = side
		e.Complement = cfg.complementOf(side.Rows(m, n), e.Rank)
		e.ProjectorFLOPs, e.ReplacedFLOPs = 2*matrixWork(m, n, rows, e.Rank, e.Complement, p), 0
		if p != nil {
			e.ReplacedFLOPs = 2 * int64(rows) * int64(m) * int64(n)
		}
		products[i] = p
		plan[i] = e
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
	// matrix (a small model, or small batches), the step is the base optimizer's alone (step.go),
	// and the plan and Report say so. A rank the user set that fits
	// no matrix is an error.
	if projected == 0 && (cfg.rank > 0 || cfg.explicit || cfg.mode != Matrix) {
		exceptions.Panicf("hooks.Subspace: none of the %d selected variables can be projected at %s:\n%s(lower the rank, or choose other variables)", selected, cfg.rankDesc(), planLines(plan))
	}
	return plan, products
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
		if stored != configured && !o.cfg.policy.adaptive(o.cfg.rank) {
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
	return svBasis.ofVariable(path.Join(scope.Scope(), StateScope), v.Path())
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

// matrixView is how the post-hoc path sees a weight of any rank as a matrix [m, n].
type matrixView struct {
	m, n  int
	fromW func(w *Node) *Node // W (or its gradient) → [m, n]
	toW   func(w2 *Node) *Node
	desc  string // for the plan
}

// viewOf matricizes a weight by how it is used: a convolution's kernel as [spatial·in, out]
// (whatever its layout or grouping), a product's weight as its contracted axes against the
// rest, anything else as [dimension 0, the rest], which the plan then states.
func viewOf(g *Graph, w *Node) *matrixView {
	for _, c := range g.Nodes()[w.Id()+1:] {
		if len(c.Inputs()) < 2 || c.Inputs()[1] != w && c.Inputs()[0] != w {
			continue
		}
		var p *product
		switch c.Type() {
		case NodeTypeConvGeneral:
			if c.Inputs()[1] == w {
				if conv := newConvInfo(c, w.Shape().Dimensions, upstream.ConvGeneralParams(c)); conv != nil {
					out := w.Shape().Dim(conv.kernelOut)
					return &matrixView{m: w.Shape().Size() / out, n: out, fromW: conv.matrix, toW: conv.kernelOf,
						desc: fmt.Sprintf("a convolution kernel [%d×%d] (spatial·in × out)", w.Shape().Size()/out, out)}
				}
			}
		case NodeTypeDotGeneral:
			p, _ = dotGeneralProduct(c, w)
		case NodeTypeFusedDense:
			p, _ = fusedDenseProduct(c, w)
		}
		if p != nil {
			return &matrixView{m: p.m, n: p.n, fromW: p.fromW, toW: p.toW,
				desc: fmt.Sprintf("a [%d×%d] matrix (contracted axes × the rest)", p.m, p.n)}
		}
	}
	dims := w.Shape().Dimensions
	m := dims[0]
	n := w.Shape().Size() / m
	return &matrixView{m: m, n: n,
		fromW: func(w *Node) *Node { return Reshape(w, m, n) },
		toW:   func(w2 *Node) *Node { return Reshape(w2, dims...) },
		desc:  fmt.Sprintf("[%d×%d] (dimension 0 × the rest)", m, n)}
}

// Route is how a variable's gradient reaches the base optimizer.
type Route string

const (
	RouteTemporal Route = "temporal" // flattened gradient projected on a learned temporal basis
	RouteDirect   Route = "direct"   // matrix subspace, projected gradient computed from ∂y; no ∂W
	RoutePostHoc  Route = "post-hoc" // matrix subspace, full gradient computed then projected
	RouteFull     Route = "full"     // not projected
)

// PlanEntry is the projector's decision for one trainable variable.
type PlanEntry struct {
	Variable string
	Shape    shapes.Shape
	Route    Route
	Side     projector.Side // matrix subspace: the side of the basis (Full variables: unused)
	Rank     int
	// Complement is the number of random directions outside the basis that also step each
	// step (Config.Complement; matrix subspace).
	Complement int
	Why        string

	// The price of projecting it (matrix subspace; zero for full and temporal entries),
	// estimated from the shapes as FLOPs per step (2 per multiply-add) and bytes:
	ProjectorFLOPs int64 // the projector's products: coefficients, tracking, basis, lift
	ReplacedFLOPs  int64 // the gradient products it replaces: ∂W on the direct path, none post-hoc
	// StockStateBytes is the base optimizer's state for the weight unprojected (its moments
	// of W's shape); StateBytes what the projection keeps instead: the basis, the coefficients
	// and the base optimizer's state of the coefficients. Both are set when the step is built.
	StockStateBytes, StateBytes int64

	rows, cols int         // the variable as a matrix (matrix subspace)
	view       *matrixView // post-hoc path: how its gradient is seen as that matrix
}

// Plan returns the per-variable decisions of the last step graph built.
func (o *Optimizer) Plan() []PlanEntry {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]PlanEntry(nil), o.plan...)
}

// PlanString formats the plan for people: one line per trainable variable.
func (o *Optimizer) PlanString() string {
	o.mu.Lock()
	enabled := o.cfg.enabled // cfg: set by the params at the first step
	o.mu.Unlock()
	if !enabled {
		return disabledLine + " every variable\n"
	}
	var b strings.Builder
	rank := fmt.Sprintf("rank %d", o.cfg.rank)
	if o.cfg.rank == 0 {
		rank = strings.TrimPrefix(o.cfg.rankDesc(), "the ")
	}
	plan := o.Plan()
	if len(plan) > 0 && !projectsAny(plan) {
		rank += "; no variable projected: the model trains with its base optimizer alone (reasons below)"
	}
	fmt.Fprintf(&b, "subspace (%s mode, %s):\n", o.cfg.mode, rank)
	rows := make([][4]string, len(plan))
	widths := [4]int{}
	for i, e := range plan {
		detail := string(e.Route)
		if e.Route == RouteDirect || e.Route == RoutePostHoc {
			detail += fmt.Sprintf(", %s side", e.Side)
		}
		if e.Route != RouteFull {
			detail += fmt.Sprintf(", rank %d", e.Rank)
			if e.Complement > 0 {
				detail += fmt.Sprintf(" + %d random", e.Complement)
			}
			if scale := o.cfg.ScaleOf(e.Side.Rows(e.rows, e.cols), e.Rank); scale != 1 {
				detail += fmt.Sprintf(", step ×%.2f", scale)
			}
		}
		rows[i] = [4]string{e.Variable, fmt.Sprint(e.Shape.Dimensions), detail, e.price()}
		for c, cell := range rows[i] { // columns as wide as their longest cell
			widths[c] = max(widths[c], utf8.RuneCountInString(cell))
		}
	}
	for i, e := range plan {
		line := fmt.Sprintf("  %-*s  %-*s  %-*s  ", widths[0], rows[i][0], widths[1], rows[i][1], widths[2], rows[i][2])
		if widths[3] > 0 { // the price column, where any variable is projected
			line += fmt.Sprintf("%-*s  ", widths[3], rows[i][3])
		}
		line += e.Why
		b.WriteString(strings.TrimRight(line, " ") + "\n")
	}
	b.WriteString(o.priceLines(plan))
	return b.String()
}

// price is a projected entry's column of the plan: its products as a multiple of the ∂W they
// replace (post-hoc: added to the ∂W still built), and its optimizer state, stock → projected.
func (e PlanEntry) price() string {
	if e.ProjectorFLOPs == 0 {
		return ""
	}
	var cost string
	if e.ReplacedFLOPs > 0 {
		cost = fmt.Sprintf("%.2f×∂W", float64(e.ProjectorFLOPs)/float64(e.ReplacedFLOPs))
	} else {
		cost = "+" + HumanFLOPs(e.ProjectorFLOPs) + " (∂W built too)"
	}
	if e.StockStateBytes > 0 || e.StateBytes > 0 {
		cost += fmt.Sprintf(", state %s→%s", humanize.Bytes(e.StockStateBytes), humanize.Bytes(e.StateBytes))
	}
	return cost
}

// priceLines totals the projected entries' price: their gradient products and optimizer state,
// stock → projected, and says so in a plain line when the plan makes a step cost more FLOPs than
// stock's (a forced rank can), with the memory it saves.
func (o *Optimizer) priceLines(plan []PlanEntry) string {
	var work, replaced, stockState, state int64
	for _, e := range plan {
		work += e.ProjectorFLOPs
		replaced += e.ReplacedFLOPs
		stockState += e.StockStateBytes
		state += e.StateBytes
	}
	if work == 0 {
		return ""
	}
	s := fmt.Sprintf("  price, estimated from the shapes: the projected weights' gradient products %s → %s a step; their optimizer state %s → %s\n",
		HumanFLOPs(replaced), HumanFLOPs(work), humanize.Bytes(stockState), humanize.Bytes(state))
	if extra := work - replaced; extra > 0 {
		share := ""
		if f, err := o.StepFLOPs(); err == nil && f.Step()-extra > 0 {
			share = fmt.Sprintf(" (%+.0f%% of stock's step)", 100*float64(extra)/float64(f.Step()-extra))
		}
		s += fmt.Sprintf("  this plan makes a step cost more than stock's: %s more a step%s, for %s less optimizer state\n",
			HumanFLOPs(extra), share, humanize.Bytes(stockState-state))
	}
	return s
}

// notSelectedWhy says why the selection leaves v out, in words that name what v is.
func notSelectedWhy(cfg *Config, v *model.Variable) string {
	if !cfg.explicit {
		switch {
		case !v.DType().IsFloat():
			return fmt.Sprintf("not a float (%s): only float weights are projected", v.DType())
		case v.Shape().Rank() < 2:
			return "a vector: biases, scales and gains keep full updates"
		}
	}
	return "not selected (" + cfg.selectDesc + ")"
}

// matrixWork estimates the multiply-adds the matrix subspace spends per step on a weight [m, n]
// at rank r with s complement directions. On the direct path (p, a product of rows rows a
// step) that is projectorWork's, plus the projection of a regularizer's gradient where one
// reads the weight; post-hoc (p nil) the full gradient's coefficients in [Q | Ω] and its
// tracking products (power product and sketch) take the place of the product's.
func matrixWork(m, n, rows, r, s int, p *product) int64 {
	mn, rr, ss := int64(m)*int64(n), int64(r), int64(s)
	if p == nil {
		direct := projectorWork(m, n, 0, r, s) // the basis, complement and lift: no rows
		return direct + mn*(rr+ss) + mn*(rr+int64(projector.SketchColumns(r)))
	}
	work := projectorWork(m, n, rows, r, s)
	if p.weightReaders != "" {
		work += mn * (rr + ss)
	}
	return work
}

// priceState sets the projected entries' optimizer state (PlanEntry.StateBytes and
// StockStateBytes) from the state the step built: the base optimizer keeps, for the
// coefficients, the moments it would keep for the weight.
func (st *stepState) priceState(plan []PlanEntry, hs []handler) {
	byPath := map[string]handler{}
	for _, h := range hs {
		byPath[h.variable().Path()] = h
	}
	for i := range plan {
		e := &plan[i]
		h, ok := byPath[e.Variable].(*matrixVar)
		if !ok {
			continue
		}
		state := st.coefficientState(h)
		moments := 0
		for _, sv := range state {
			if !strings.HasSuffix(sv.Name(), svPrevGrad.name) && !strings.HasSuffix(sv.Name(), svPrevStep.name) {
				moments++ // the curvature signal's history is the projector's, not the base's
			}
		}
		coefBytes := int64(h.coef.Shape().Memory())
		e.StockStateBytes = int64(moments) * int64(h.v.Shape().Memory())
		e.StateBytes = int64(h.basis.Shape().Memory()) + coefBytes*int64(1+len(state))
	}
}
