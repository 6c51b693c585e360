package hooks

import (
	"math"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gradsub/gradsub/projector"
)

// matrixVar trains a weight W ([m, n] as a matrix) in a matrix subspace: the base optimizer sees
// only the coefficient (Qᵀ∂W, [r, n], or ∂W·Q, [m, r]) and the update is lifted with Q. There is no
// full-update phase: the first step learns a basis from its own gradient, warm-up steps re-learn
// it every step (warm-started), later steps when the drift controller says so.
//
// Two gated pieces of work build a full gradient; ordinary steps run neither:
//   - the check (drift-check steps): the control gradient — on the direct path from the leading
//     Policy.ControlFraction of the batch's rows — its residual against the current basis, and
//     the part of it outside the subspace (for a rotating full update);
//   - the learning (warm-up and refresh steps): the whole batch's gradient, a basis learned from
//     it warm-started from the current one, and the coefficient gradient in that basis.
//
// On the direct path the full ∂W = x₂ᵀ·∂y₂ exists only inside these gates.
type matrixVar struct {
	st        *stepState
	v         *model.Variable
	side      projector.Side
	m, n      int // W as a matrix
	rank      int
	p         *product // nil on the post-hoc path
	toW       func(*Node) *Node
	basis     *model.Variable
	coef      *model.Variable
	explained *model.Variable
	valid     *model.Variable
	residVar  *model.Variable

	oldBasis, oldValid *Node
	stepCoef           *Node // coefficient gradient with the current basis
	fullGrad           func(in []*Node) *Node
	fullInputs         []*Node             // the whole batch's inputs of fullGrad
	checkWork          *projector.GatePart // the drift check's gated work (nil: no checks)
	checked            []*Node             // its outputs: residual, and the outside part's top pair and inside length
	coefGrad, useProj  *Node
}

func newMatrixVar(st *stepState, v *model.Variable, m, n, rank int, side projector.Side) *matrixVar {
	dtype := stateDType(v)
	basisRows := m
	coefShape := shapes.Make(dtype, rank, n)
	if side == projector.Right {
		basisRows = n
		coefShape = shapes.Make(dtype, m, rank)
	}
	h := &matrixVar{
		st: st, v: v, side: side, m: m, n: n, rank: rank,
		basis:     st.varState(v, "basis", shapes.Make(dtype, basisRows, rank)),
		coef:      st.varState(v, "coefficients", coefShape),
		explained: st.varState(v, "explained", shapes.Make(dtype)),
		valid:     st.varState(v, "valid", shapes.Make(dtypes.Int32)),
		residVar:  st.varState(v, "residual", shapes.Make(dtype)),
	}
	h.oldBasis = h.basis.NodeValue(st.g)
	h.oldValid = GreaterThan(h.valid.NodeValue(st.g), Const(st.g, int32(0)))
	return h
}

// newMatrixDirect builds the direct path: dy is the gradient of the product's output.
func newMatrixDirect(st *stepState, v *model.Variable, p *product, dy *Node, side string, rank int) *matrixVar {
	h := newMatrixVar(st, v, p.m, p.n, rank, sideOf(side))
	h.p, h.toW = p, p.toW
	x2 := p.xRows(p.x)
	sdt := stateDType(v)
	dy2 := p.dyRows(ConvertDType(dy, sdt))
	if x2.DType() != sdt {
		x2 = ConvertDType(x2, sdt)
	}
	h.stepCoef = projector.DirectCoefficients(x2, dy2, h.oldBasis, h.side)
	h.fullGrad = func(in []*Node) *Node { return projector.TransposedTimes(in[0], in[1]) }
	h.fullInputs = []*Node{x2, dy2}
	rows := x2.Shape().Dim(0)
	control := max(1, min(rows, int(math.Ceil(st.o.cfg.policy.ControlFraction*float64(rows)))))
	// The control rows are sliced inside the check's gate: outside it, the slices would be copied
	// on every step.
	h.describeCheck(func(in []*Node) *Node {
		return h.fullGrad([]*Node{Slice(in[0], AxisRange(0, control)), Slice(in[1], AxisRange(0, control))})
	}, x2, dy2)
	return h
}

// newMatrixPostHoc builds the post-hoc path from the full gradient, viewed as [dim 0, the rest].
func newMatrixPostHoc(st *stepState, v *model.Variable, grad *Node, side string, rank int) *matrixVar {
	m := v.Shape().Dim(0)
	n := v.Shape().Size() / m
	h := newMatrixVar(st, v, m, n, rank, sideOf(side))
	dims := v.Shape().Dimensions
	h.toW = func(w2 *Node) *Node { return Reshape(w2, dims...) }
	grad2 := ConvertDType(Reshape(grad, m, n), stateDType(v))
	h.stepCoef = projector.ProjectMatrix(grad2, h.oldBasis, h.side)
	h.fullGrad = func(in []*Node) *Node { return in[0] }
	h.fullInputs = []*Node{grad2}
	h.describeCheck(h.fullGrad, grad2)
	return h
}

// describeCheck describes the drift check's gated work on the control gradient (controlGrad of
// inputs): its relative residual against the current basis (1 before a basis exists), the top
// singular pair of its part outside the subspace (for the full-update rule) and the length of its
// part inside. Only small outputs leave the gate: ordinary steps pay for none of it. The
// optimizer gates every variable's check together (projector.GateAll) and hands the outputs back
// with setChecked.
func (h *matrixVar) describeCheck(controlGrad func(in []*Node) *Node, inputs ...*Node) {
	g := h.st.g
	if h.st.o.cfg.policy.CheckEvery == 0 {
		return // no checks: none of their work is built
	}
	dtype := stateDType(h.v)
	scalar := ScalarZero(g, dtype)
	rows := h.oldBasis.Shape().Dim(0)
	cols := h.m * h.n / rows
	otherwise := []*Node{scalar, Zeros(g, shapes.Make(dtype, rows)), Zeros(g, shapes.Make(dtype, cols)), scalar, scalar}
	in := append(append([]*Node{}, inputs...), h.oldBasis, h.oldValid)
	h.checkWork = &projector.GatePart{Inputs: in, Otherwise: otherwise, Fn: func(in []*Node) []*Node {
		n := len(inputs)
		grad := controlGrad(in[:n])
		oldBasis, oldValid := in[n], in[n+1]
		a := grad // the basis spans a's columns
		if h.side == projector.Right {
			a = Transpose(grad, 0, 1)
		}
		inside := DotProduct(oldBasis, projector.TransposedTimes(oldBasis, a))
		outside := Sub(a, inside)
		resid := projector.RelativeLength(outside, a)
		resid = Where(oldValid, resid, OnesLike(resid))
		b, c, sigma := projector.TopSingularPair(outside, 2)
		return []*Node{resid, b, c, sigma, Sqrt(ReduceAllSum(Square(inside)))}
	}}
}

func (h *matrixVar) checkGatePart() *projector.GatePart { return h.checkWork }
func (h *matrixVar) setChecked(outputs []*Node)         { h.checked = outputs }

func (h *matrixVar) variable() *model.Variable { return h.v }
func (h *matrixVar) stepCoefficients() *Node {
	if h.p == nil {
		return nil // post-hoc: the full gradient is checked
	}
	return h.stepCoef
}
func (h *matrixVar) fullUpdateInBase() bool { return false }

// frozenWithoutBasis: without a valid basis the matrix subspace has no coefficient to update.
func (h *matrixVar) frozenWithoutBasis() *Node { return LogicalNot(h.oldValid) }
func (h *matrixVar) useProjection() *Node      { return h.useProj }

// residual is read at checks, where the check ran.
func (h *matrixVar) residual() *Node {
	if h.checked == nil {
		return ScalarZero(h.st.g, stateDType(h.v))
	}
	return h.checked[0]
}

func (h *matrixVar) coefficients() (*model.Variable, *Node) { return h.coef, h.coefGrad }

// lift maps the coefficient step back with Q. On its full-update turn the variable also steps
// along the strongest direction of its control gradient outside the subspace, σ·b·cᵀ, scaled to
// at most the length of the projected step (Fira's norm-based scaling: −‖step‖·σ/max(σ, ‖inside‖)).
// That rank-1 term rides in the lift's product, [Q | b]·[Δc ; α·cᵀ] (α = 0 off turn), so ordinary
// steps pay one more rank in the lift and no full-size pass.
func (h *matrixVar) lift(step, fullTurn *Node) *Node {
	basis := h.basis.NodeValue(h.st.g)
	if fullTurn != nil {
		b, c, sigma, insideLen := h.checked[1], h.checked[2], h.checked[3], h.checked[4]
		alpha := Div(Mul(Sqrt(ReduceAllSum(Square(step))), sigma), projector.SafeDivisor(Max(sigma, insideLen)))
		alpha = Where(fullTurn, Neg(alpha), ZerosLike(alpha))
		basis = Concatenate([]*Node{basis, InsertAxes(b, -1)}, 1)
		if h.side == projector.Left { // step [r, n]
			step = Concatenate([]*Node{step, InsertAxes(Mul(c, alpha), 0)}, 0)
		} else { // step [m, r]
			step = Concatenate([]*Node{step, InsertAxes(Mul(c, alpha), -1)}, 1)
		}
	}
	return ConvertDType(h.toW(projector.LiftMatrix(basis, step, h.side)), h.v.DType())
}

// learnGatePart is the learning gate's work: the full gradient, a basis learned from it
// warm-started from the current one, and the gradient's coefficients in that basis. The optimizer
// gates every variable's learning together and hands the outputs to applyLearned.
func (h *matrixVar) learnGatePart() projector.GatePart {
	g := h.st.g
	scalar := ScalarZero(g, stateDType(h.v))
	otherwise := []*Node{h.oldBasis, ZerosLike(h.stepCoef), scalar, Const(g, false)}
	in := append(append([]*Node{}, h.fullInputs...), h.oldBasis, h.oldValid)
	return projector.GatePart{Inputs: in, Otherwise: otherwise, Fn: func(in []*Node) []*Node {
		n := len(h.fullInputs)
		grad := h.fullGrad(in[:n])
		oldBasis, oldValid := in[n], in[n+1]
		lm := projector.LearnMatrix(grad, h.rank, h.side, oldBasis, oldValid, projector.DefaultPowerIterations)
		return []*Node{lm.Basis, projector.ProjectMatrix(grad, lm.Basis, h.side), lm.ExplainedVariance, lm.Valid}
	}}
}

// applyLearned takes the learning gate's outputs: the new basis where one was learned and valid.
func (h *matrixVar) applyLearned(learnNow *Node, learned []*Node) {
	g := h.st.g
	take := LogicalAnd(learnNow, learned[3])
	h.st.countKept(LogicalAnd(learnNow, LogicalNot(learned[3])))
	h.basis.SetNodeValue(Where(take, learned[0], h.oldBasis))
	h.coefGrad = Where(take, learned[1], h.stepCoef)
	h.explained.SetNodeValue(Where(take, learned[2], h.explained.NodeValue(g)))
	if h.checked != nil {
		h.residVar.SetNodeValue(Where(h.st.isCheck, h.checked[0], h.residVar.NodeValue(g)))
	}
	newValid := LogicalOr(h.oldValid, take)
	h.valid.SetNodeValue(ConvertDType(newValid, dtypes.Int32))
	h.useProj = newValid
}

// stateDType is the dtype of a projected variable's bases, coefficients and statistics: its own
// for float32 and float64, float32 for half precision (bfloat16, float16), which cannot hold an
// orthonormal basis or sums of squares to useful precision.
func stateDType(v *model.Variable) dtypes.DType {
	if v.DType().IsHalfPrecision() {
		return dtypes.Float32
	}
	return v.DType()
}

func sideOf(s string) projector.Side {
	if s == projector.Right.String() {
		return projector.Right
	}
	return projector.Left
}
