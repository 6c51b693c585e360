// Package step builds the projector's part of a training step graph (Build): back-propagation
// to the products' outputs on the direct path, each projected variable's coefficient gradient
// and tracking products, the guard, the drift controller, the bases' learning, the wrapped
// optimizer on the coefficients and the lift back into the weights. Each rule lives in its own
// file with the state entries it owns (Schema); the policy and constants it reads are
// hooks/internal/rules', and package hooks plans the step and reports on it.
package step
