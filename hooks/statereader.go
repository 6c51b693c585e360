package hooks

import (
	"fmt"
	"reflect"
	"slices"

	"github.com/gomlx/gomlx/ml/model"
	"github.com/gradsub/gradsub/hooks/internal/rules"
)

// stateReader reads the projector's state variables from a store; the first error (a missing
// variable, an unreadable value) sticks, and later reads return nil.
type stateReader struct {
	store    *model.Store
	matrixAt map[string]int // each matrix's position in matrix mode's per-matrix vectors
	vectors  map[string]any // the per-matrix vectors read so far, by path
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

// perVariable reads a projected variable's scalar entry s: a matrix's element of the entry's
// per-matrix vector (each vector read once a Report), a temporal variable's own scalar.
// Optional entries exist only where their rule is on (nil otherwise).
func (sr *stateReader) perVariable(root string, s rules.StateVar, variable string, optional bool) any {
	get := func(p string) any {
		if optional {
			return sr.optional(p)
		}
		return sr.read(p)
	}
	i, matrix := sr.matrixAt[variable]
	if !matrix {
		return get(s.OfVariable(root, variable))
	}
	p := s.OfMatrices(root)
	vector, done := sr.vectors[p]
	if !done {
		vector = get(p)
		if sr.vectors == nil {
			sr.vectors = map[string]any{}
		}
		sr.vectors[p] = vector
	}
	if v := reflect.ValueOf(vector); v.Kind() == reflect.Slice && i < v.Len() {
		return v.Index(i).Interface()
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
