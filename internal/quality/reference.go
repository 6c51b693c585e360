package quality

import (
	"fmt"
	"math/rand/v2"
	"path"
	"regexp"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/model/initializer"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"gonum.org/v1/gonum/mat"
)

// Reference is GaLore as published (Zhao et al. 2024, Algorithm 2), written independently of the
// projector: every step back-propagates the full gradient G of each projected weight, projects it
// on the current basis P (R = PᵀG, or G·P on the other side), runs Adam on R (its moments have R's
// shape and are kept, unrotated, when P changes) and applies the lifted step scaled by Scale. P is
// the top-Rank singular vectors of the gradient on the weight's smaller side, computed exactly on
// the host (gonum) every RefreshEvery steps from that step's own gradient (Refresh, called by the
// harness before the step). With RandomBasis, P is a fixed random orthonormal basis instead: the
// control that says how much a learned basis is worth.
//
// Unprojected variables take plain Adam with the same hyper-parameters as GoMLX's.
type Reference struct {
	LR, Beta1, Beta2, Epsilon float64
	Scale                     float64
	Rank                      int
	RefreshEvery              int
	RandomBasis               bool
	WeightDecay               float64 // AdamW's decoupled decay of every weight, scaled by LR (GoMLX's Adam with WeightDecay)
	Project                   *regexp.Regexp
	View                      func(path string, dims []int) (m, n int)
}

var _ optimizer.Interface = (*Reference)(nil)

// ReferenceScope is the scope of the reference's bases and moments.
const ReferenceScope = "galore_reference"

// NewReference returns GaLore with GoMLX Adam's defaults (β 0.9/0.999, ε 1e-7), scale 1 and a
// refresh every 200 steps (the paper's default T).
func NewReference(t Task, random bool) *Reference {
	return &Reference{LR: t.LR, Beta1: 0.9, Beta2: 0.999, Epsilon: 1e-7, Scale: 1, Rank: t.Rank,
		RefreshEvery: 200, RandomBasis: random, Project: regexp.MustCompile(t.Project), View: t.View}
}

func (r *Reference) basisScope(store *model.Store, v *model.Variable) *model.Scope {
	return store.Scope(path.Join("/", ReferenceScope, v.Scope()))
}

// side of a weight viewed as m×n: the basis lives on the smaller one (left: [m, r]).
func (r *Reference) view(v *model.Variable) (m, n int, left bool) {
	m, n = r.View(v.Path(), v.Shape().Dimensions)
	if m*n != v.Shape().Size() {
		panic(fmt.Sprintf("quality: the view %d×%d of %s does not have its %d elements", m, n, v.Path(), v.Shape().Size()))
	}
	return m, n, m <= n
}

// projected says whether the reference projects v: a selected float32 weight whose smaller side
// exceeds the rank (as the projector's plan: at or below it, projecting saves nothing).
func (r *Reference) projected(v *model.Variable) bool {
	if !v.Trainable || v.DType() != dtypes.Float32 || !r.Project.MatchString(v.Path()) {
		return false
	}
	m, n := r.View(v.Path(), v.Shape().Dimensions)
	return min(m, n) > r.Rank
}

// Refresh sets the bases, before training step `step`: at step 0 and every RefreshEvery steps
// from the gradient of the batch about to be trained on (or, with RandomBasis, once at step 0).
// gradients returns the full gradients of the projected variables on that batch.
func (r *Reference) Refresh(store *model.Store, step int, gradients func() (map[string]*tensors.Tensor, error)) error {
	if r.RandomBasis {
		if step != 0 {
			return nil
		}
		return r.setRandomBases(store)
	}
	if step%r.RefreshEvery != 0 {
		return nil
	}
	grads, err := gradients()
	if err != nil {
		return err
	}
	for v := range store.IterVariables() {
		if !r.projected(v) {
			continue
		}
		grad, ok := grads[v.Path()]
		if !ok {
			return fmt.Errorf("quality: no gradient for %s", v.Path())
		}
		if err := r.setSVDBasis(store, v, grad); err != nil {
			return err
		}
	}
	return nil
}

// setRandomBases gives every projected variable a random orthonormal basis (the random variant).
func (r *Reference) setRandomBases(store *model.Store) error {
	rng := rand.New(rand.NewPCG(uint64(store.NumVariables()), 7))
	for v := range store.IterVariables() {
		if !r.projected(v) {
			continue
		}
		m, n, left := r.view(v)
		rows := n
		if left {
			rows = m
		}
		a := mat.NewDense(rows, r.Rank, nil)
		for i := range rows {
			for j := range r.Rank {
				a.Set(i, j, rng.NormFloat64())
			}
		}
		var svd mat.SVD
		svd.Factorize(a, mat.SVDThin)
		var u mat.Dense
		svd.UTo(&u)
		if err := r.setBasis(store, v, &u, rows); err != nil {
			return err
		}
	}
	return nil
}

// setSVDBasis sets v's basis to the top singular vectors of its gradient grad, on its side.
func (r *Reference) setSVDBasis(store *model.Store, v *model.Variable, grad *tensors.Tensor) error {
	m, n, left := r.view(v)
	flat := tensors.MustCopyFlatData[float32](grad)
	g := mat.NewDense(m, n, nil)
	for i := range m {
		for j := range n {
			g.Set(i, j, float64(flat[i*n+j]))
		}
	}
	var svd mat.SVD
	if !svd.Factorize(g, mat.SVDThin) {
		return fmt.Errorf("quality: the SVD of %s's gradient did not converge", v.Path())
	}
	var q mat.Dense
	rows := m
	if left {
		svd.UTo(&q)
	} else {
		svd.VTo(&q)
		rows = n
	}
	return r.setBasis(store, v, &q, rows)
}

// setBasis stores the first Rank columns of q ([rows, ≥ Rank]) as v's basis.
func (r *Reference) setBasis(store *model.Store, v *model.Variable, q *mat.Dense, rows int) error {
	data := make([]float32, rows*r.Rank)
	for i := range rows {
		for j := range r.Rank {
			data[i*r.Rank+j] = float32(q.At(i, j))
		}
	}
	t := tensors.FromFlatDataAndDimensions(data, rows, r.Rank)
	scope := r.basisScope(store, v)
	if b := scope.GetVariable(v.Name() + "_basis"); b != nil {
		return b.SetValue(t)
	}
	b, err := scope.CreateVariable(v.Name()+"_basis", t)
	if err != nil {
		return err
	}
	b.SetTrainable(false)
	return nil
}

// UpdateGraph implements optimizer.Interface.
func (r *Reference) UpdateGraph(scope *model.Scope, g *Graph, loss *Node) {
	store := scope.Store()
	var vars []*model.Variable
	var values []*Node
	for v := range scope.IterVariables() {
		if v.Trainable && v.InUseByGraph(g) {
			vars = append(vars, v)
			values = append(values, v.NodeValue(g))
		}
	}
	grads := Gradient(loss, values...)
	state := store.Scope("/" + ReferenceScope).WithInitializer(initializer.Zero)
	stepVar := state.VariableWithShape("step", shapes.Make(dtypes.Float32)).SetTrainable(false)
	t := AddScalar(stepVar.NodeValue(g), 1)
	stepVar.SetNodeValue(t)
	debias1 := Reciprocal(OneMinus(Pow(Scalar(g, dtypes.Float32, r.Beta1), t)))
	debias2 := Reciprocal(OneMinus(Pow(Scalar(g, dtypes.Float32, r.Beta2), t)))
	adam := func(v *model.Variable, grad *Node) *Node { // the normalised step, grad's shape
		vs := store.Scope(path.Join("/", ReferenceScope, v.Scope())).WithInitializer(initializer.Zero)
		m1 := vs.VariableWithShape(v.Name()+"_m1", grad.Shape()).SetTrainable(false)
		m2 := vs.VariableWithShape(v.Name()+"_m2", grad.Shape()).SetTrainable(false)
		nm1 := Add(MulScalar(m1.NodeValue(g), r.Beta1), MulScalar(grad, 1-r.Beta1))
		nm2 := Add(MulScalar(m2.NodeValue(g), r.Beta2), MulScalar(Square(grad), 1-r.Beta2))
		m1.SetNodeValue(nm1)
		m2.SetNodeValue(nm2)
		return Div(Mul(nm1, debias1), AddScalar(Sqrt(Mul(nm2, debias2)), r.Epsilon))
	}
	for i, v := range vars {
		grad := grads[i]
		value := v.NodeValue(g)
		if r.WeightDecay > 0 { // as GoMLX's AdamW: every trainable variable, by LR·decay
			value = Sub(value, MulScalar(value, r.LR*r.WeightDecay))
		}
		if !r.projected(v) {
			v.SetNodeValue(Sub(value, MulScalar(adam(v, grad), r.LR)))
			continue
		}
		m, n, left := r.view(v)
		b := r.basisScope(store, v).GetVariable(v.Name() + "_basis")
		if b == nil {
			panic(fmt.Sprintf("quality: GaLore reference: no basis for %s: call Refresh before the first step", v.Path()))
		}
		p := b.NodeValue(g)
		g2 := Reshape(grad, m, n)
		var lifted *Node
		if left { // R = Pᵀ·G [r, n]; step P·N
			coef := DotGeneral(p, []int{0}, nil, g2, []int{0}, nil)
			lifted = DotProduct(p, adam(v, coef))
		} else { // R = G·P [m, r]; step N·Pᵀ
			coef := DotProduct(g2, p)
			lifted = DotGeneral(adam(v, coef), []int{1}, nil, p, []int{1}, nil)
		}
		v.SetNodeValue(Sub(value, MulScalar(Reshape(lifted, v.Shape().Dimensions...), r.LR*r.Scale)))
	}
}

// Clear implements optimizer.Interface.
func (r *Reference) Clear(scope *model.Scope) error {
	return scope.Store().DeleteVariablesInScope("/" + ReferenceScope)
}

// gradientExec returns a function computing the full gradients of the projected variables of a
// task's model on one batch, with the store's current values.
func gradientExec(backend compute.Backend, store *model.Store, t Task, r *Reference) func(x, y *tensors.Tensor) (map[string]*tensors.Tensor, error) {
	return ReferenceGradients(backend, store, func(scope *model.Scope, x *Node) *Node { return t.Model(scope, []*Node{x})[0] }, r)
}

// ReferenceGradients returns a function computing the full gradients of the variables r projects,
// for a model (logits of x) trained with the sparse cross-entropy, on one batch (x, and y the
// labels), with the store's current values: what Refresh needs.
func ReferenceGradients(backend compute.Backend, store *model.Store, logitsFn func(scope *model.Scope, x *Node) *Node, r *Reference) func(x, y *tensors.Tensor) (map[string]*tensors.Tensor, error) {
	var paths []string
	exec, err := model.NewExec(backend, store, func(scope *model.Scope, x, y *Node) []*Node {
		g := x.Graph()
		scope.SetTraining(g, true)
		loss := lossOf(y, logitsFn(scope, x))
		var values []*Node
		paths = paths[:0]
		for v := range scope.Store().IterVariables() {
			if r.projected(v) && v.InUseByGraph(g) {
				values = append(values, v.NodeValue(g))
				paths = append(paths, v.Path())
			}
		}
		grads := Gradient(loss, values...)
		// The Go backend (compute v0.1.14) fails to execute a graph whose outputs are some
		// gradient nodes themselves ("index out of range"); a trivial op in between avoids it.
		for i, grad := range grads {
			grads[i] = Add(grad, ZerosLike(grad))
		}
		return grads
	})
	return func(x, y *tensors.Tensor) (map[string]*tensors.Tensor, error) {
		if err != nil {
			return nil, err
		}
		outs, err := exec.Exec(x, y)
		if err != nil {
			return nil, err
		}
		grads := make(map[string]*tensors.Tensor, len(outs))
		for i, o := range outs {
			grads[paths[i]] = o
		}
		return grads, nil
	}
}
