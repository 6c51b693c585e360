package rules

import "fmt"

// Mode selects the subspace a variable's gradient is projected on.
type Mode int

const (
	// Matrix (the default) keeps an orthonormal basis Q on one side of each weight matrix and,
	// where the weight is used in a single product y = x·W, computes the projected gradient
	// directly as (x·Q)ᵀ·∂y: back-propagation never builds ∂W. The base optimizer's state lives
	// on the coefficient ([r, n] or [m, r]).
	Matrix Mode = iota
	// Temporal is the original method: the flattened gradient is projected on the top singular
	// vectors of a stack of recent gradients, after a full backward pass. It saves optimizer
	// state and work, not gradient FLOPs. Warm-up steps are full steps.
	Temporal
)

// String is the mode's name, as ParseMode and the subspace_mode param take it ("matrix", "temporal").
func (m Mode) String() string {
	if m == Temporal {
		return "temporal"
	}
	return "matrix"
}

// ParseMode reads "matrix" or "temporal".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "matrix":
		return Matrix, nil
	case "temporal":
		return Temporal, nil
	}
	return Matrix, fmt.Errorf("unknown subspace mode %q (use matrix or temporal)", s)
}
