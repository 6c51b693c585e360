package hooks

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/gomlx/compute/shapes"
	"github.com/gomlx/compute/support/humanize"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gradsub/gradsub/hooks/internal/direct"
	"github.com/gradsub/gradsub/projector"
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

	rows, cols int          // the variable as a matrix (matrix subspace)
	view       *direct.View // post-hoc path: how its gradient is seen as that matrix
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
func matrixWork(m, n, rows, r, s int, p *direct.Product) int64 {
	mn, rr, ss := int64(m)*int64(n), int64(r), int64(s)
	if p == nil {
		direct := projectorWork(m, n, 0, r, s) // the basis, complement and lift: no rows
		return direct + mn*(rr+ss) + mn*(rr+int64(projector.SketchColumns(r)))
	}
	work := projectorWork(m, n, rows, r, s)
	if p.WeightReaders != "" {
		work += mn * (rr + ss)
	}
	return work
}
