// Package direct finds, in a GoMLX step graph, how each weight is used, for hooks' plan and its
// direct path: the single product through which a weight reaches the loss (FusedDense,
// DotGeneral or an ungrouped ConvGeneral; FindProduct), seen as a matrix product y₂ = x₂·W₂;
// the roles that keep a weight out of the default selection (Roles: an embedding table, an
// output head, an elementwise gain); how the post-hoc path sees any other weight as a matrix
// (ViewOf); and the VJPs of FusedDense, DotGeneral and ConvGeneral, wrapped at start-up so that a
// product marked direct (MarkDirect) skips its weight gradient.
//
// It builds no optimizer state and knows nothing of bases: hooks computes the projected
// gradient from a Product's x and ∂y (projector.DirectStep, or ConvDirectStep for a kernel).
package direct
