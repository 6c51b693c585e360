package hooks

import (
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gradsub/gradsub/projector"
)

// matrixVar trains a weight W ([m, n] as a matrix) in a matrix subspace: the base optimizer sees
// only the coefficient (Qᵀ∂W, [r, n], or ∂W·Q, [m, r]) and the update is lifted with Q. There is no
// full-update phase: the first step learns a basis from its own gradient, warm-up steps re-learn
// it every step (warm-started), later steps at drift checks.
//
// On the direct path the coefficient comes from the product's input and output gradient, and the
// full ∂W = x₂ᵀ·∂y₂ is built only inside the gate of learning and check steps.
type matrixVar struct {
	st        *stepState
	v         *model.Variable
	side      projector.Side
	p         *product // nil on the post-hoc path
	toW       func(*Node) *Node
	basis     *model.Variable
	coef      *model.Variable
	explained *model.Variable
	valid     *model.Variable
	residVar  *model.Variable

	oldBasis, oldValid *Node
	stepCoef           *Node   // coefficient gradient with the current basis
	gated              []*Node // basis learned, its coefficient gradient, residual, explained, valid
	coefGrad, useProj  *Node
}

func newMatrixVar(st *stepState, v *model.Variable, m, n int, side projector.Side) *matrixVar {
	cfg := &st.o.cfg
	dtype := stateDType(v)
	basisRows := m
	coefShape := shapes.Make(dtype, cfg.rank, n)
	if side == projector.Right {
		basisRows = n
		coefShape = shapes.Make(dtype, m, cfg.rank)
	}
	h := &matrixVar{
		st: st, v: v, side: side,
		basis:     st.varState(v, "basis", shapes.Make(dtype, basisRows, cfg.rank)),
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
func newMatrixDirect(st *stepState, v *model.Variable, p *product, dy *Node, side string) *matrixVar {
	h := newMatrixVar(st, v, p.m, p.n, sideOf(side))
	h.p, h.toW = p, p.toW
	x2 := p.xRows(p.x)
	sdt := stateDType(v)
	dy2 := p.dyRows(ConvertDType(dy, sdt))
	if x2.DType() != sdt {
		x2 = ConvertDType(x2, sdt)
	}
	h.stepCoef = projector.DirectCoefficients(x2, dy2, h.oldBasis, h.side)
	h.gate(func(in []*Node) *Node { return DotProduct(Transpose(in[0], 0, 1), in[1]) }, x2, dy2)
	return h
}

// newMatrixPostHoc builds the post-hoc path from the full gradient, viewed as [dim 0, the rest].
func newMatrixPostHoc(st *stepState, v *model.Variable, grad *Node, side string) *matrixVar {
	m := v.Shape().Dim(0)
	n := v.Shape().Size() / m
	h := newMatrixVar(st, v, m, n, sideOf(side))
	dims := v.Shape().Dimensions
	h.toW = func(w2 *Node) *Node { return Reshape(w2, dims...) }
	grad2 := ConvertDType(Reshape(grad, m, n), stateDType(v))
	h.stepCoef = projector.ProjectMatrix(grad2, h.oldBasis, h.side)
	h.gate(func(in []*Node) *Node { return in[0] }, grad2)
	return h
}

// gate builds the learning and checking work, run on warm-up and check steps only: the full
// gradient (from fullGrad's inputs), its residual against the current basis, a basis learned
// from it warm-started from the current one, and the coefficient gradient in that basis.
func (h *matrixVar) gate(fullGrad func(in []*Node) *Node, inputs ...*Node) {
	st := h.st
	g := st.g
	cfg := &st.o.cfg
	run := LogicalOr(st.warm, st.isCheck)
	scalar := ScalarZero(g, stateDType(h.v))
	otherwise := []*Node{h.oldBasis, ZerosLike(h.stepCoef), scalar, scalar, Const(g, false)}
	in := append(append([]*Node{}, inputs...), h.oldBasis, h.oldValid)
	h.gated = projector.Gate(run, in, otherwise, func(in []*Node) []*Node {
		n := len(inputs)
		grad := fullGrad(in[:n])
		oldBasis, oldValid := in[n], in[n+1]
		resid := Where(oldValid, projector.MatrixResidual(grad, oldBasis, h.side), OnesLike(scalar))
		lm := projector.LearnMatrix(grad, cfg.rank, h.side, oldBasis, oldValid, projector.DefaultPowerIterations)
		return []*Node{lm.Basis, projector.ProjectMatrix(grad, lm.Basis, h.side), resid, lm.ExplainedVariance, lm.Valid}
	})
}

func (h *matrixVar) variable() *model.Variable { return h.v }
func (h *matrixVar) stepCoefficients() *Node {
	if h.p == nil {
		return nil // post-hoc: the full gradient is checked
	}
	return h.stepCoef
}
func (h *matrixVar) fullUpdateInBase() bool { return false }
func (h *matrixVar) useProjection() *Node   { return h.useProj }

// residual is read at checks, where the gate ran.
func (h *matrixVar) residual() *Node { return h.gated[2] }

func (h *matrixVar) coefficients() (*model.Variable, *Node) { return h.coef, h.coefGrad }

func (h *matrixVar) lift(step *Node) *Node {
	return ConvertDType(h.toW(projector.LiftMatrix(h.basis.NodeValue(h.st.g), step, h.side)), h.v.DType())
}

// learn takes the gated basis when learnNow and the gate produced a valid one.
func (h *matrixVar) learn(learnNow *Node) {
	g := h.st.g
	take := LogicalAnd(learnNow, h.gated[4])
	h.st.countKept(LogicalAnd(learnNow, LogicalNot(h.gated[4])))
	h.basis.SetNodeValue(Where(take, h.gated[0], h.oldBasis))
	h.coefGrad = Where(take, h.gated[1], h.stepCoef)
	h.explained.SetNodeValue(Where(take, h.gated[3], h.explained.NodeValue(g)))
	h.residVar.SetNodeValue(Where(h.st.isCheck, h.gated[2], h.residVar.NodeValue(g)))
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
