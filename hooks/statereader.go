package hooks

import (
	"fmt"
	"slices"

	"github.com/gomlx/gomlx/ml/model"
	"github.com/gradsub/gradsub/hooks/internal/rules"
)

// stateReader reads the projector's state variables from a store; the first error (a missing
// variable, an unreadable value) sticks, and later reads return nil.
type stateReader struct {
	store    *model.Store
	matrixAt map[string]int // each matrix's position in matrix mode's per-matrix vectors
	err      error
}

// matrixPositions are the positions of the plan's matrices in the per-matrix vectors: their
// paths' order, as the step lays them out (internal/step/vectors.go).
func matrixPositions(plan []PlanEntry) map[string]int {
	var paths []string
	for _, e := range plan {
		if e.Route == RouteDirect || e.Route == RoutePostHoc {
			paths = append(paths, e.Variable)
		}
	}
	slices.Sort(paths)
	at := make(map[string]int, len(paths))
	for i, p := range paths {
		at[p] = i
	}
	return at
}

// read is the value of the variable at path p (nil, and an error, where it is missing).
func (sr *stateReader) read(p string) any {
	if sr.err != nil {
		return nil
	}
	v := sr.store.GetVariable(p)
	if v == nil {
		sr.err = fmt.Errorf("hooks: state variable %s is missing from the store", p)
		return nil
	}
	t, err := v.Value()
	if err != nil {
		sr.err = err
		return nil
	}
	return t.Value()
}

// optional reads a signal's state that exists only where its rule is on (nil otherwise).
func (sr *stateReader) optional(p string) any {
	if v := sr.store.GetVariable(p); v != nil {
		return sr.read(p)
	}
	return nil
}

// perVariable reads a projected variable's scalar entry s: in matrix mode the variable's element
// of the entry's per-matrix vector; in temporal mode, and in a store written before the vectors
// (2026-12-07), its own scalar. Optional entries exist only where their rule is on (nil otherwise).
func (sr *stateReader) perVariable(root string, s rules.StateVar, variable string, optional bool) any {
	if i, ok := sr.matrixAt[variable]; ok {
		if v := sr.store.GetVariable(s.OfMatrices(root)); v != nil {
			return element(sr.read(v.Path()), i)
		}
	}
	if optional {
		return sr.optional(s.OfVariable(root, variable))
	}
	return sr.read(s.OfVariable(root, variable))
}

// element is the i-th value of a vector's Go value (nil where there is none).
func element(vector any, i int) any {
	switch x := vector.(type) {
	case []float32:
		if i < len(x) {
			return x[i]
		}
	case []float64:
		if i < len(x) {
			return x[i]
		}
	case []int32:
		if i < len(x) {
			return x[i]
		}
	case []int64:
		if i < len(x) {
			return x[i]
		}
	}
	return nil
}

func asInt(x any) int64 {
	switch x := x.(type) {
	case int64:
		return x
	case int32:
		return int64(x)
	}
	return 0
}

func asFloat(x any) float64 {
	switch x := x.(type) {
	case float32:
		return float64(x)
	case float64:
		return x
	}
	return 0
}
