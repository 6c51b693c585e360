// Package projector is the graph-level math of the gradient-subspace projector, with no GoMLX
// optimizer in it: each function builds GoMLX graph nodes from nodes. hooks.Subspace uses it to
// build its training step; it is exported for tests, examples and other wrappers.
//
// A weight W ([m, n]) trains in a subspace of its gradients: an orthonormal basis Q ([m, r] on the
// Left side, [n, r] on the Right) holds the directions kept, the base optimizer steps the
// coefficient C = Qᵀ·∂W ([r, n]), and the step is lifted back as Q·step.
//
//   - Matrix mode: DirectStep computes C from a product's input x and output gradient ∂y,
//     (x·Q)ᵀ·∂y, without ∂W, with the products that track the basis (TrackingProducts);
//     TrackBasis moves Q towards them and keeps it orthonormal (NewtonSchulz); SketchResidual
//     measures what Q misses; RotateCoefficients carries optimizer state into the next basis.
//   - The complement: ComplementDirections draws random directions outside Q each step, and
//     ComplementStep steps the weight along them, state-free (docs/complement.md).
//   - Temporal mode: LearnTemporal learns a basis of a flattened gradient from a ring buffer of
//     recent ones (an eigen-solve of their Gram matrix, SymmetricEigen), Coefficients and Lift
//     use it.
//
// Checks (CheckMatrix) return errors that name the problem and the fix; functions that build a
// graph panic with such an error on shapes they cannot take, as GoMLX's ops do.
package projector
