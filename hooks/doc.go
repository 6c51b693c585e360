// Package hooks is the GoMLX glue of the gradient-subspace projector: an optimizer wrapper that
// trains selected variables inside low-rank subspaces of their gradients, the host-side monitor
// that reports what it did, and FLOP accounting of the compiled step.
//
// Using it is one change to a GoMLX program: wrap the optimizer it already uses.
//
//	opt := hooks.Subspace(optimizer.Adam().Done()).Rank(8).Done()
//	trainer := train.NewTrainer(backend, store, modelFn, lossFn, opt, trainMetrics, evalMetrics)
//
// By default every trainable float variable of rank ≥ 2 is projected, except matrices whose
// smaller side is ≤ the rank, embedding tables (read by a Gather) and output heads (no other
// weight's product follows them); biases and scalars keep full updates. Without Rank, each matrix
// keeps AutoRank directions: 1/64 of its smaller side, at least MinAutoRank (16), and twice as
// many complement directions (below); it is left out where the projector's work on it would
// exceed 0.7 of the ∂W it replaces, or the lift of those directions alone a quarter of it (a
// small matrix, few rows per step: the rank is not lowered to fit, as lower ranks cost quality). Without the complement (Complement(0), or an SGD base)
// the automatic rank is PlainAutoRank's: 3/16, at least 32. Convolution kernels are left out
// too: a 128-channel kernel needed three quarters of its output side to keep stock's eval loss,
// a share whose projector costs more than that cap; with Rank set they are projected.
// A model where that leaves out every matrix trains with its base optimizer alone (the same
// compiled step), and the plan says why for each.
// Two subspaces (Mode):
//
//   - Matrix (default): a basis Q on one side of each weight seen as a matrix W [m, n] by how it
//     is used: a dense or DotGeneral weight as its contracted axes × the rest (y = x·W); a
//     convolution kernel ([kh, kw, in, out], or channels-first [out, in, kh, kw]) as
//     [kh·kw·in, out]; a weight used otherwise as [dimension 0, the rest]. PlanString names
//     the view of each. Where W feeds a single product or ungrouped convolution, the projected
//     gradient is computed directly — (x·Q)ᵀ·∂y, or for a kernel the kernel gradient of the
//     same convolution against ∂y·Q (r output channels instead of out) — and back-propagation
//     skips ∂W (GoMLX's VJPs for FusedDense, DotGeneral and ConvGeneral are wrapped to honour
//     that, for the marked nodes only); otherwise the full gradient is built and projected. The base optimizer runs on the coefficient, so its
//     state is [r, n] instead of [m, n], and the update Q·Δc is lifted back. Bases track the
//     gradients every step from the same skinny products (a power-iteration step xᵀ·(∂y·Cᵀ),
//     re-orthonormalised by Newton–Schulz; the optimizer's moments rotate with the basis). Each
//     step also moves the weight along Complement fresh random directions outside the basis,
//     from the same products and with no state (docs/complement.md): what lets a low rank keep
//     quality.
//   - Temporal (the original method): each flattened gradient is projected on the top singular
//     vectors of a ring buffer of recent gradients; warm-up steps are full steps.
//
// Every CheckEvery steps a drift check reads the relative residual ‖g − proj(g)‖/‖g‖ (matrix mode:
// estimated every step from a sketch). The bases are refreshed (matrix mode: a burst of fast
// tracking) when the residual is above ResidualThreshold and has grown by more than DriftMargin
// since the basis's first check (a temporal basis never learned is replaced at once), when a
// smoothed loss stops falling for LossPatience checks, or when the curvature of the loss along the
// last step jumps above CurvatureFactor times its smoothed magnitude (see Policy). All of it runs inside the one compiled step graph, with no control flow in matrix
// mode: phases come from a step counter held in a variable, so neither phase switches nor
// refreshes recompile anything. The state (bases, snapshots, counters) lives in GoMLX
// variables under the "subspace" scope, so checkpoints carry it.
package hooks
