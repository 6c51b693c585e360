package step

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"

	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gradsub/gradsub/hooks/internal/rules"
	"github.com/gradsub/gradsub/projector"
)

// A step's bases: each projected matrix's stored basis, checked, or its start basis, and its
// complement's directions, prepared for all matrices before their products (a stack per basis
// shape).

// startBasis is the fixed random orthonormal basis a variable starts from (and restarts from),
// seeded by its path: runs and resumed runs start alike.
func (h *matrixVar) startBasis() [][]float64 {
	return projector.RandomOrthonormal(h.side.Rows(h.m, h.n), h.rank, h.pathHash)
}

// DrawEachAlone makes each matrix of a stack draw its complement's directions from its own
// seed, as it does alone (tests: a stacked step compared with each matrix's alone).
var DrawEachAlone = false

// complementNoise is this step's draw for the complement's directions (ComplementNoise) of
// group, matrices of one basis shape: [rows, s] for one, [k, rows, s] for a stack, in one draw
// seeded by the members' paths and the step number (an op the compiler cannot fuse is a kernel
// launch: a draw costs some eight). A matrix alone draws from its own path's seed.
func (st *stepState) complementNoise(group []*matrixVar) *Node {
	if len(group) > 1 && DrawEachAlone {
		noise := make([]*Node, len(group))
		for i := range group {
			noise[i] = st.complementNoise(group[i : i+1])
		}
		return stacked(noise)
	}
	h := group[0]
	dims := []int{h.side.Rows(h.m, h.n), h.compCount}
	seed := h.pathHash
	if len(group) > 1 {
		dims = append([]int{len(group)}, dims...)
		hash := fnv.New64a()
		for _, m := range group {
			hash.Write(binary.LittleEndian.AppendUint64(nil, m.pathHash))
		}
		seed = hash.Sum64()
	}
	return projector.ComplementNoise(projector.ComplementSeedAt(st.seedStep(), seed^complementSeedSalt), shapes.Make(stateDType(h.v), dims...))
}

// seedStep is this step's number as the complement's seeds read it, made once a step.
func (st *stepState) seedStep() *Node {
	if st.seedStepNode == nil {
		st.seedStepNode = projector.SeedStep(st.t)
	}
	return st.seedStepNode
}

// prepareBases sets each matrix's basis for this step (oldBasis) and draws its complement's
// directions (compDirs), for the matrices of one basis shape at once (a stack): a variable that
// has not stepped yet (or whose rank just changed) starts from its start basis, and so does a
// stored basis that is not orthonormal — a non-finite value or a damaged or hand-edited
// checkpoint: steps that use it would all be skipped or scaled wrongly, and tracking only keeps
// an orthonormal basis orthonormal. The test costs an r×r Gram (NaN fails it).
func (st *stepState) prepareBases(ms []*matrixVar) {
	g := st.g
	for _, group := range matrixGroups(ms, func(h *matrixVar) string { return h.basis.Shape().String() + fmt.Sprint(h.compCount) }) {
		k, h0 := len(group), group[0]
		dtype, rank := h0.basis.DType(), h0.rank
		stored, start, eye := make([]*Node, k), make([][][]float64, k), make([][][]float64, k)
		for i, h := range group {
			stored[i], start[i] = h.basis.NodeValue(g), h.startBasis()
			eye[i] = identity(rank)
		}
		valid := st.matrices.read(st.matrices.valid, group) // [k]
		if k == 1 {
			q := stored[0]
			gramErr := ReduceAllMax(Abs(Sub(projector.TransposedTimes(q, q), DiagonalWithValue(ScalarOne(g, dtype), rank))))
			hasBasis := LogicalAnd(GreaterThan(Reshape(valid), Const(g, int32(0))), LessThan(gramErr, Scalar(g, dtype, rules.BasisTolerance)))
			h0.oldBasis = Where(hasBasis, q, ConstAsDType(g, dtype, start[0]))
			if h0.compCount > 0 {
				h0.compDirs = projector.ComplementFromNoise(h0.oldBasis, st.complementNoise(group))
			}
			continue
		}
		q := stacked(stored)
		gramErr := ReduceMax(Abs(Sub(projector.Rotations(q, q), ConstAsDType(g, dtype, eye))), 1, 2) // [k]
		hasBasis := LogicalAnd(GreaterThan(valid, Const(g, int32(0))), LessThan(gramErr, Scalar(g, dtype, rules.BasisTolerance)))
		old := projector.ChooseRows(hasBasis, q, ConstAsDType(g, dtype, start))
		for i, part := range unstacked(old) {
			group[i].oldBasis = part
		}
		if h0.compCount > 0 {
			for i, dirs := range unstacked(projector.ComplementFromNoise(old, st.complementNoise(group))) {
				group[i].compDirs = dirs
			}
		}
	}
}

// identity is the r×r identity matrix.
func identity(r int) [][]float64 {
	eye := make([][]float64, r)
	for i := range eye {
		eye[i] = make([]float64, r)
		eye[i][i] = 1
	}
	return eye
}
