package step

import (
	"math"
	"slices"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/support/exceptions"
	"github.com/gradsub/gradsub/hooks/internal/direct"
	"github.com/gradsub/gradsub/hooks/internal/rules"
	"github.com/gradsub/gradsub/internal/upstream"
	"github.com/gradsub/gradsub/projector"
)

// This rule's state: entries of the schema (state.go).
var (
	SvBasis         = rules.NewStateVar("basis", dtypes.InvalidDType, "basis: the orthonormal basis")
	SvCoefficients  = rules.NewStateVar("coefficients", dtypes.InvalidDType, "base step: the variable the base optimizer updates (zero between steps)")
	SvValid         = rules.NewStateVar("valid", dtypes.Int32, "basis: a basis was learned")
	SvResidual      = rules.NewStateVar("residual", dtypes.InvalidDType, "basis: the (matrix: smoothed) relative residual of the gradient against it, the residual rule's signal")
	SvComplementLen = rules.NewStateVar("complement_step_length", dtypes.InvalidDType, "complement: the length of the last complement step (its growth limit)")
)

// matrixVar trains a weight W ([m, n] as a matrix) in a matrix subspace: the base optimizer sees
// only the coefficient (Qᵀ∂W, [r, n], or ∂W·Q, [m, r]) and the update is lifted with Q.
//
// Every step runs the same dataflow, with no branch and, on the direct path, no ∂W:
//   - the coefficient C in the step's basis Q (on the direct path (x·Q)ᵀ·∂y);
//   - the tracking products, from C and the batch: the power product ∂W·Cᵀ = xᵀ·(∂y·Cᵀ) and a
//     sketch ∂W·Ω of a few random columns (projector.DirectStep, from a quarter of the rows);
//   - the residual of the sketch against Q, the drift controller's signal;
//   - the next basis: Q moved towards the power product at the step's tracking rate (fast
//     during warm-up and after a refresh, slow otherwise) and re-orthonormalised
//     (projector.TrackBasis; the optimizer tracks all bases of one shape in one batch);
//   - after the base optimizer's update, the coefficient-shaped optimizer state is rotated into
//     the next basis by R = Q_nextᵀ·Q (rotateState).
//
// Before its first step a variable starts from a fixed random orthonormal basis: the first
// step's power product is then a randomized range finder of ∂W.
type matrixVar struct {
	st    *stepState
	v     *model.Variable
	side  projector.Side
	m, n  int // W as a matrix
	rank  int
	p     *direct.Product // nil on the post-hoc path
	toW   func(*Node) *Node
	basis *model.Variable
	// The coefficients the base optimizer steps: the matrix's own variable (coef), or slot of
	// a stack shared with matrices of its shape (stacks.go).
	coef      *model.Variable
	coefShape shapes.Shape
	stack     *coefStack
	slot      int
	at        int // its position in the per-matrix vectors (matrixScalars)
	// trackedFactor multiplies the tracked directions' step (the step-length rule); nil: 1.
	trackedFactor *Node

	oldBasis  *Node  // Q: the basis of this step's coefficients
	stepCoef  *Node  // the coefficient gradient in Q
	compDirs  *Node  // Ω: this step's random complement directions ([side rows, s]; nil: none)
	span      *Node  // [Q | Ω] where the direct step built it (nil: not built)
	compCoef  *Node  // the coefficient gradient in Ω
	compCount int    // s, the complement's directions (0: none)
	pathHash  uint64 // seeds the start basis and the complement's draws
	compStep  *Node  // this step's complement step, sized with its group's (stepState.complementSteps)

	scaledFrom, scaledStep         *Node // the base optimizer's coefficient step, and it times Config.Scale
	lengthenedFrom, lengthenedStep *Node // a step, and it times the step-length rule's factor
	products                       projector.TrackingProducts
	rotation                       *Node         // R = Q_nextᵀ·Q, set by tracked (nil where batch holds it)
	batch                          *trackedBatch // the group tracked as one stack with it (nil: tracked alone)
}

func newMatrixVar(st *stepState, v *model.Variable, m, n, rank int, side projector.Side) *matrixVar {
	dtype := stateDType(v)
	basisRows := side.Rows(m, n)
	coefShape := shapes.Make(dtype, rank, n)
	if side == projector.Right {
		coefShape = shapes.Make(dtype, m, rank)
	}
	h := &matrixVar{
		st: st, v: v, side: side, m: m, n: n, rank: rank, coefShape: coefShape,
		basis:    st.perVariable(v, SvBasis, shapes.Make(dtype, basisRows, rank)),
		pathHash: PathHash(v.Path()),
	}
	if s := st.cfg.ComplementOf(basisRows, rank); s > 0 && st.cfg.Mode == rules.Matrix {
		h.compCount = s
	}
	return h
}

// matrixState lines up the per-matrix vectors with this build's matrices (ms, in path order), makes
// the coefficient variables (stacks.go), and the basis's and the complement's vectors: each
// basis's validity and smoothed residual (floats of the widest state dtype), and, where a matrix
// has a complement, its last step's length.
func (st *stepState) matrixState(ms []*matrixVar) {
	s := newMatrixScalars(st, ms)
	dtype, complement := dtypes.Float32, false
	for _, m := range ms {
		if stateDType(m.v) == dtypes.Float64 {
			dtype = dtypes.Float64
		}
		complement = complement || m.compCount > 0
	}
	st.coefficientVars(ms)
	s.valid, s.residual = s.vector(SvValid, dtype), s.vector(SvResidual, dtype)
	if complement {
		s.compLen = s.vector(SvComplementLen, dtype)
	}
	st.matrices = s
}

// complementSeedSalt sets the complement's random stream apart from the start basis's, which
// has the same path hash.
const complementSeedSalt = 0x636f6d706c656d65

// sketch is the fixed random Ω ([cols, s]) of the residual sketch.
func (h *matrixVar) sketch(cols int) *Node {
	return ConstAsDType(h.st.g, stateDType(h.v), projector.Sketch(cols, projector.SketchColumns(h.rank)))
}

// sketchRows is sketch transposed, [s, cols], built on the host: the direct path's form.
func (h *matrixVar) sketchRows(cols int) *Node {
	return ConstAsDType(h.st.g, stateDType(h.v), projector.SketchRows(cols, projector.SketchColumns(h.rank)))
}

// newMatrixDirect builds the direct path: dy is the gradient of the product's output, and
// readerGrad (nil: none) the weight's gradient through its other readers, functions of the
// weight alone such as a regularizer. That gradient needs no batch: its projection is added to
// the coefficients (Qᵀ·G and Ωᵀ·G, at about 2(r+s)·mn multiply-adds). The bases track the
// product's gradient only: a regularizer's, λ·W or λ·sign(W), has no low-rank structure to follow.
func newMatrixDirect(st *stepState, h *matrixVar, p *direct.Product, dy, readerGrad *Node) *matrixVar {
	newMatrixDirectProduct(st, h, p, dy)
	if readerGrad != nil {
		g2 := ConvertDType(p.FromW(readerGrad), stateDType(h.v))
		h.stepCoef = Add(h.stepCoef, projector.ProjectMatrix(g2, h.oldBasis, h.side))
		if h.compCoef != nil {
			h.compCoef = Add(h.compCoef, projector.ProjectMatrix(g2, ConvertDType(h.compDirs, g2.DType()), h.side))
		}
	}
	return h
}

// newMatrixDirectProduct is the direct path's coefficients and tracking products from the
// product's x and ∂y.
func newMatrixDirectProduct(st *stepState, h *matrixVar, p *direct.Product, dy *Node) {
	h.p, h.toW = p, p.ToW
	sdt := stateDType(h.v)
	if p.Conv != nil {
		x, dyc := ConvertDType(p.X, sdt), ConvertDType(dy, sdt)
		h.stepCoef, h.compCoef, h.products = direct.ConvDirectStep(p.Conv, x, dyc, h.oldBasis, h.compDirs, h.sketch(h.otherSide()), h.side, st.cfg.Policy.TrackingFraction, rules.MinTrackingRows)
		return
	}
	x2 := ConvertDType(p.XRows(p.X), sdt)
	dy2 := p.DyRows(ConvertDType(dy, sdt))
	rows := x2.Shape().Dim(0)
	trackRows := max(int(math.Ceil(st.cfg.Policy.TrackingFraction*float64(rows))), rules.MinTrackingRows)
	h.span = projector.Span(h.oldBasis, h.compDirs)
	h.stepCoef, h.compCoef, h.products = projector.DirectStepInSpan(x2, dy2, h.span, h.rank, h.sketchRows(h.otherSide()), h.side, trackRows)
}

// newMatrixPostHoc builds the post-hoc path from the full gradient, seen as a matrix by view.
func newMatrixPostHoc(h *matrixVar, grad *Node, view *direct.View) *matrixVar {
	h.toW = view.ToW
	grad2 := ConvertDType(view.FromW(grad), stateDType(h.v))
	h.stepCoef = projector.ProjectMatrix(grad2, h.oldBasis, h.side)
	h.products = projector.FullTrackingProducts(grad2, h.stepCoef, h.sketch(h.otherSide()), h.side)
	if h.compDirs != nil {
		h.compCoef = projector.ProjectMatrix(grad2, h.compDirs, h.side)
	}
	return h
}

// otherSide is the size of W's side the basis does not live on (the sketch's Ω rows).
func (h *matrixVar) otherSide() int {
	if h.side == projector.Left {
		return h.n
	}
	return h.m
}

func (h *matrixVar) variable() *model.Variable              { return h.v }
func (h *matrixVar) coefficients() (*model.Variable, *Node) { return h.coef, h.stepCoef }

// directCoefficients is the coefficient gradient computed outside back-propagation, on the
// direct path, for the guard to check; nil on the post-hoc path (its full gradient is checked).
func (h *matrixVar) directCoefficients() *Node {
	if h.p == nil {
		return nil
	}
	return h.stepCoef
}

// lift maps the coefficient step back with the step's basis Q, and adds the complement's step
// along its random directions Ω in the same product: [Q | Ω]·[step; complement step]. The
// complement steps as the base optimizer does: normalised after Adam-like ones (a second
// moment in the coefficients' state), in proportion to its gradient after SGD (projector.ComplementStep). The
// matrix subspace takes no rotating full update (Policy.FullUpdateEvery): its basis follows any
// direction whose energy grows, at the tracking rate, and the complement reaches the rest.
func (h *matrixVar) lift(step *Node) *Node {
	step = h.scaled(step)
	basis := h.oldBasis
	if h.compCoef != nil {
		if h.compStep == nil {
			exceptions.Panicf("hooks: internal error: %s lifted before its complement's step was sized (stepState.complementSteps)", h.v.Path())
		}
		axis := 0 // Left: steps are rows [r, n]
		if h.side == projector.Right {
			axis = 1
		}
		basis = h.span // [Q | Ω], as the coefficient's product read it
		if basis == nil {
			basis = projector.Span(h.oldBasis, h.compDirs)
		}
		step = Concatenate([]*Node{h.lengthened(step), h.compStep}, axis)
	} else {
		step = h.lengthened(step)
	}
	return ConvertDType(h.toW(projector.LiftMatrix(basis, step, h.side)), h.v.DType())
}

// scaled is the coefficient step times the configured scale (Config.Scale), built once per step
// (the complement's step is sized from it too).
func (h *matrixVar) scaled(step *Node) *Node {
	if step == h.scaledFrom {
		return h.scaledStep
	}
	h.scaledFrom, h.scaledStep = step, step
	if scale := h.st.cfg.ScaleOf(h.side.Rows(h.m, h.n), h.rank); scale != 1 {
		h.scaledStep = MulScalar(step, scale)
	}
	return h.scaledStep
}

// stepsFromStack gives h its step scaled already (taken: scaled returns it as it is) and, where
// the rule lengthens it (factor not nil), lengthened already: both made on h's coefficient stack.
func (h *matrixVar) stepsFromStack(scaled, lengthened, factor *Node) {
	h.scaledFrom, h.scaledStep = scaled, scaled
	if factor != nil {
		h.trackedFactor = factor
		h.lengthenedFrom, h.lengthenedStep = scaled, lengthened
	}
}

// lengthened is the tracked directions' step times the step-length rule's factor: the
// complement's step was sized against the step before it (ComplementScale).
func (h *matrixVar) lengthened(step *Node) *Node {
	if h.trackedFactor == nil {
		return step
	}
	if step != h.lengthenedFrom { // built once a step: the curvature rule reads it too
		h.lengthenedFrom, h.lengthenedStep = step, Mul(step, ConvertDType(h.trackedFactor, step.DType()))
	}
	return h.lengthenedStep
}

// tracked takes the next basis: it stores it and the rotation into it. (The sketch residual is
// smoothed with all matrices', stepState.trackedResiduals.)
func (h *matrixVar) tracked(next *Node) {
	h.basis.SetNodeValue(next)
	h.rotation = projector.TransposedTimes(next, h.oldBasis)
}

// rotationNode is R = Q_nextᵀ·Q, where tracked set it or from the batch tracked with it.
func (h *matrixVar) rotationNode() *Node {
	if h.rotation != nil || h.batch == nil {
		return h.rotation
	}
	i := slices.Index(h.batch.members, h)
	return Reshape(Slice(h.batch.rotation, AxisElem(i)), h.rank, h.rank)
}

// smoothResidual is the next smoothed sketch residual from the stored one (old), the variable's
// validity flag and this step's residual: scalars, or vectors over a group. The smoothing
// restarts from this step's residual for a new basis, and where the stored one is outside
// [0, 1] (a damaged checkpoint; NaN included): an EMA would carry it for good.
func smoothResidual(old, valid, resid *Node) *Node {
	inRange := LogicalAnd(GreaterOrEqual(old, upstream.ZeroOf(old)), LessOrEqual(old, upstream.OneOf(old)))
	first := LogicalOr(LessOrEqual(valid, upstream.ZeroOf(valid)), LogicalNot(inRange))
	resid = Where(first, resid, Add(MulScalar(old, rules.ResidualEMADecay), MulScalar(resid, 1-rules.ResidualEMADecay)))
	return projector.AtMostOne(resid) // the average of two shares ≤ 1 can round to 1 + ulp
}

// rotateState maps this variable's coefficient-shaped state (the base optimizer's moments, the
// curvature signal's history), as updated by this step, into the next basis. Second moments
// (named "…_2nd_moment", as GoMLX's Adam, AdamW and RMSProp name them) rotate by R∘R plus the
// old mean for each new axis's share outside the old span, the rest by R
// (projector.RotateCoefficients). After a non-finite step (stepOK false) it restarts from zero.
func (h *matrixVar) rotateState(state []*model.Variable, stepOK *Node) {
	g := h.st.g
	for _, sv := range state {
		squared := upstream.IsSecondMoment(sv)
		value := sv.NodeValue(g)
		rot := ConvertDType(h.rotation, value.DType())
		rotated := projector.RotateCoefficients(value, rot, h.side, squared)
		// A non-finite moment (loaded, or overflowed) makes a non-finite step and would poison
		// every later one, or, if it is an infinite second moment, freeze its coordinate for
		// good (its steps are 0): after such a step, or holding such a value, the state
		// restarts from zero.
		sv.SetNodeValue(Where(LogicalAnd(stepOK, IsFinite(ReduceAllSum(value))), rotated, upstream.ZeroOf(rotated)))
	}
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
