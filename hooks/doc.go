// Package hooks trains a GoMLX model's weight matrices in low-rank subspaces of their gradients:
// an optimizer wrapper, and the monitor and reports that say what it did.
//
// Using it is one change to a GoMLX program: wrap the optimizer it already uses.
//
//	opt := hooks.Subspace(optimizer.Adam().Done()).Done()
//	trainer := train.NewTrainer(backend, store, modelFn, lossFn, opt, trainMetrics, evalMetrics)
//
// With no other option (the one option) each matrix that pays for it keeps AutoRank directions
// of a basis Q on its smaller side, plus Complement fresh random directions outside Q each step;
// embedding tables, output heads, vectors and, without Rank, convolution kernels keep full
// updates, and a model where nothing pays trains with its base optimizer alone. Where a weight W
// feeds one product y = x·W, the projected gradient Qᵀ·∂W = (x·Q)ᵀ·∂y is computed directly and
// back-propagation skips ∂W; the base optimizer runs on that coefficient and its step is lifted
// back as Q·step, lengthened while successive gradients agree (ScaleAdaptation: a projected
// Adam step is shorter than a full one). Q tracks the gradients every step; a drift controller
// (Policy) refreshes it when the residual grows, the loss stalls or the curvature jumps.
// Everything runs in one compiled step graph, and the state lives in GoMLX variables under the
// "subspace" scope, so checkpoints carry it. Mode(Temporal) is the original write-up's subspace of recent gradients instead.
//
// After the first step, Optimizer.PlanString says what happens to each variable, why, and the
// price; Optimizer.NewMonitor logs refreshes and feeds a progress bar; Optimizer.Report gives the
// state at any time; DefaultParams registers every option as a param for -set.
//
// The method, its measurements and the code's map are in the repository's docs/: tracking.md,
// rank.md, complement.md, controller.md, conv.md, quality.md, benchmarks.md, architecture.md.
package hooks
