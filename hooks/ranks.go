package hooks

import (
	"fmt"
	"hash/fnv"
	"math"
	"path"
	"strings"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/train"
	"github.com/gradsub/gradsub/hooks/internal/rules"
	"github.com/gradsub/gradsub/hooks/internal/step"
	"github.com/gradsub/gradsub/projector"
)

// RankChange is one application of the rank rule.
type RankChange struct {
	Step     int64
	Variable string
	From, To int
	Reason   string
}

// String is the change as AdaptRanks logs it: the variable, its old and new rank, and why.
func (c RankChange) String() string {
	return fmt.Sprintf("step %d: %s rank %d → %d (%s); step graph recompiled", c.Step, c.Variable, c.From, c.To, c.Reason)
}

// AdaptRanks applies the rank rule (Policy.MinRank, MaxRank) between steps: a variable whose
// residual stayed above GrowAbove (below ShrinkBelow) for RankPatience checks gets twice (half)
// its rank. Its basis, coefficients and every coefficient-shaped optimizer state (Adam's moments)
// are migrated in the store — kept directions and moments stay, new ones start at zero — the
// bases are re-learned at the next step, and the trainer's compiled graphs are dropped, so the
// next step recompiles once. A Monitor with a trainer calls it after every observation.
func (o *Optimizer) AdaptRanks(trainer *train.Trainer) ([]RankChange, error) {
	pol := o.cfg.policy
	if o.cfg.mode != Matrix || !pol.Adaptive(o.cfg.rank) || pol.CheckEvery == 0 {
		return nil, nil
	}
	store := trainer.Store()
	o.mu.Lock()
	root, plan := o.stateRoot, append([]PlanEntry(nil), o.plan...)
	o.mu.Unlock()
	if root == "" {
		return nil, nil
	}
	report, err := o.Report(store)
	if err != nil {
		return nil, err
	}
	var changes []RankChange
	positions := matrixPositions(plan)
	pathOf := pathsByHash(positions)
	for _, e := range plan {
		if e.Route != RouteDirect && e.Route != RoutePostHoc {
			continue
		}
		vr, found := report.variable(e.Variable)
		if !found || !vr.Valid {
			continue
		}
		limit := min(e.rows, e.cols)
		to, why := pol.NextRank(e.Rank, vr.HighChecks, vr.LowChecks, limit)
		if to == e.Rank || projector.CheckMatrix(e.rows, e.cols, to, e.Side) != nil {
			continue
		}
		// Its coefficients' state is resized per variable; the next build stacks it again.
		step.UnstackMatrix(store, root, e.Variable, pathOf)
		if err := migrateRank(store, root, e, positions[e.Variable], to); err != nil {
			return changes, fmt.Errorf("hooks: changing the rank of %s from %d to %d: %w", e.Variable, e.Rank, to, err)
		}
		o.mu.Lock()
		if o.ranks == nil {
			o.ranks = map[string]int{}
		}
		o.ranks[e.Variable] = to
		o.mu.Unlock()
		changes = append(changes, RankChange{Step: report.Steps, Variable: e.Variable, From: e.Rank, To: to, Reason: why})
	}
	if len(changes) == 0 {
		return nil, nil
	}
	// Learn the bases at their new ranks on the next step, and count the change.
	if err := addToScalar(store, step.SvLearnNext.Of(root), 1, true); err != nil {
		return changes, err
	}
	if err := addToScalar(store, step.SvRankChanges.Of(root), int64(len(changes)), false); err != nil {
		return changes, err
	}
	trainer.ResetComputationGraphs()
	return changes, nil
}

// pathsByHash names the matrices (their positions' keys) by path hash, as stored state does.
func pathsByHash(positions map[string]int) map[int64]string {
	pathOf := make(map[int64]string, len(positions))
	for p := range positions {
		pathOf[int64(step.PathHash(p))] = p
	}
	return pathOf
}

// migrateRank resizes a variable's basis (rank axis 1) and every coefficient-shaped state —
// its coefficients, the curvature signal's history and the base optimizer's moments, found by
// name and shape — along the rank axis. Its streak counters (position at of the per-matrix
// vectors) restart.
func migrateRank(store *model.Store, root string, e PlanEntry, at, to int) error {
	scope, name := model.SplitPath(e.Variable)
	stateScope := path.Join(root, scope)
	basis := store.GetVariable(step.SvBasis.OfVariable(root, e.Variable))
	if basis == nil {
		return fmt.Errorf("its basis is missing from the store")
	}
	coefAxis, oldCoefDims := 0, []int{e.Rank, e.cols} // Left: [r, n]
	if e.Side == projector.Right {
		coefAxis, oldCoefDims = 1, []int{e.rows, e.Rank} // Right: [m, r]
	}
	var targets []*model.Variable
	for v := range store.IterVariables() {
		if strings.HasPrefix(v.Name(), name+"_coefficients") && strings.HasSuffix(v.Scope(), stateScope) &&
			equalDims(v.Shape().Dimensions, oldCoefDims) {
			targets = append(targets, v)
		}
	}
	if err := resizeVariable(basis, 1, to); err != nil {
		return err
	}
	if to > e.Rank {
		// Zero-padded columns would stay zero for good: a column's power product is ∂W·∂Wᵀ·0.
		// The new directions start orthonormal to the kept ones, and tracking moves them.
		if err := completeBasis(basis, e.Rank); err != nil {
			return err
		}
	}
	for _, v := range targets {
		if err := resizeVariable(v, coefAxis, to); err != nil {
			return err
		}
	}
	for _, counter := range []rules.StateVar{step.SvHighChecks, step.SvLowChecks} {
		if err := step.ZeroMatrixEntry(store, root, counter, at); err != nil {
			return err
		}
	}
	return nil
}

func equalDims(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// completeBasis replaces the columns from `from` on of an orthonormal [rows, r] basis variable
// by pseudo-random unit columns orthogonal to all before them (Gram–Schmidt applied twice, in
// float64), seeded by the variable's path: a grown basis is orthonormal again.
func completeBasis(v *model.Variable, from int) error {
	t, err := v.Value()
	if err != nil {
		return err
	}
	rows, cols := t.Shape().Dim(0), t.Shape().Dim(1)
	q := make([]float64, rows*cols)
	switch t.DType() {
	case dtypes.Float32:
		for i, x := range tensors.MustCopyFlatData[float32](t) {
			q[i] = float64(x)
		}
	case dtypes.Float64:
		copy(q, tensors.MustCopyFlatData[float64](t))
	default:
		return fmt.Errorf("basis %s has dtype %s: want float32 or float64", v.Path(), t.DType())
	}
	hash := fnv.New64a()
	hash.Write([]byte(v.Path()))
	start := projector.RandomOrthonormal(rows, cols, hash.Sum64())
	for j := from; j < cols; j++ {
		c := make([]float64, rows)
		for i := range rows {
			c[i] = start[i][j]
		}
		if !orthonormalizeAgainst(c, q, cols, j) {
			return fmt.Errorf("basis %s: no direction left to complete column %d of %d", v.Path(), j, cols)
		}
		for i := range rows {
			q[i*cols+j] = c[i]
		}
	}
	if t.DType() == dtypes.Float32 {
		out := make([]float32, len(q))
		for i, x := range q {
			out[i] = float32(x)
		}
		return v.SetValue(tensors.FromFlatDataAndDimensions(out, rows, cols))
	}
	return v.SetValue(tensors.FromFlatDataAndDimensions(q, rows, cols))
}

// orthonormalizeAgainst makes c orthogonal to the first j columns of q (row-major, cols
// columns; Gram–Schmidt, twice for accuracy) and of unit length; false where nothing of it is
// left.
func orthonormalizeAgainst(c, q []float64, cols, j int) bool {
	rows := len(c)
	for range 2 {
		for k := range j {
			var dot float64
			for i := range rows {
				dot += c[i] * q[i*cols+k]
			}
			for i := range rows {
				c[i] -= dot * q[i*cols+k]
			}
		}
	}
	var norm float64
	for _, x := range c {
		norm += x * x
	}
	if norm = math.Sqrt(norm); norm < 1e-8 {
		return false
	}
	for i := range c {
		c[i] /= norm
	}
	return true
}

// resizeVariable truncates or zero-pads a rank-2 float variable along axis to size.
func resizeVariable(v *model.Variable, axis, size int) error {
	t, err := v.Value()
	if err != nil {
		return err
	}
	var resized *tensors.Tensor
	switch t.DType() {
	case dtypes.Float32:
		resized, err = resize2D[float32](t, axis, size)
	case dtypes.Float64:
		resized, err = resize2D[float64](t, axis, size)
	default:
		err = fmt.Errorf("variable %s has dtype %s: only float32 and float64 state can change rank", v.Path(), t.DType())
	}
	if err != nil {
		return err
	}
	return v.SetValue(resized)
}

func resize2D[T float32 | float64](t *tensors.Tensor, axis, size int) (*tensors.Tensor, error) {
	if t.Rank() != 2 {
		return nil, fmt.Errorf("want a matrix, got shape %s", t.Shape())
	}
	rows, cols := t.Shape().Dim(0), t.Shape().Dim(1)
	data, err := tensors.CopyFlatData[T](t)
	if err != nil {
		return nil, err
	}
	newRows, newCols := rows, cols
	if axis == 0 {
		newRows = size
	} else {
		newCols = size
	}
	out := make([]T, newRows*newCols)
	for i := range min(rows, newRows) {
		copy(out[i*newCols:i*newCols+min(cols, newCols)], data[i*cols:i*cols+min(cols, newCols)])
	}
	return tensors.FromFlatDataAndDimensions(out, newRows, newCols), nil
}

// addToScalar adds delta to an integer scalar state variable (creating it if missing), or sets
// it to delta when set.
func addToScalar(store *model.Store, fullPath string, delta int64, set bool) error {
	v := store.GetVariable(fullPath)
	if v == nil {
		return fmt.Errorf("hooks: state variable %s is missing from the store", fullPath)
	}
	t, err := v.Value()
	if err != nil {
		return err
	}
	switch old := t.Value().(type) {
	case int32:
		if !set {
			delta += int64(old)
		}
		return v.SetValue(tensors.FromScalar(int32(delta)))
	case int64:
		if !set {
			delta += old
		}
		return v.SetValue(tensors.FromScalar(delta))
	}
	return fmt.Errorf("hooks: state variable %s has dtype %s, want an integer", fullPath, t.DType())
}
