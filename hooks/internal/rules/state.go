package rules

import (
	"path"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/gomlx/ml/model"
)

// StateVar is one entry of the projector's state schema: a non-trainable, zero-initialised
// variable under the state scope. The step graph creates it and Report, the Monitor and the
// rank rule read it through the same entry, so a rename is one edit (and a typo a compile
// error). Names are stored in checkpoints: changing one loses that value on resume.
//
// Each rule declares its entries in its own file of hooks/internal/step, and its rule string names
// it as their owner ("owner: what it holds"): only the owner's files use them in the step graph;
// other rules take its results as values (TestStateVariablesHaveOwnersAndStayWithThem). Scalars live in the
// state scope ("/subspace/step"), per-variable entries under the variable's own scope in it
// ("/subspace/dense_0/weights_basis").
type StateVar struct {
	Name  string       // scalars: the name in the state scope; per variable: the suffix after "<variable>_"
	DType dtypes.DType // InvalidDType: a float, of the loss's dtype (scalars) or the variable's state dtype
	Rule  string       // the rule or phase that owns it
}

// Of is the path of a scalar entry under the state scope root.
func (s StateVar) Of(root string) string { return path.Join(root, s.Name) }

// OfVariable is the path of a per-variable entry for the variable at variablePath.
func (s StateVar) OfVariable(root, variablePath string) string {
	scope, name := model.SplitPath(variablePath)
	return path.Join(root, scope, name+"_"+s.Name)
}

// MatricesPrefix starts the name of a per-matrix vector (OfMatrices).
const MatricesPrefix = "matrices_"

// OfMatrices is the path of a per-variable entry kept, in matrix mode, as one vector over the
// projected matrices (step/vectors.go).
func (s StateVar) OfMatrices(root string) string { return path.Join(root, MatricesPrefix+s.Name) }

// NewStateVar is the schema entry of the named variable, of dtype (InvalidDType: a float of
// the loss's or the variable's state dtype), owned by rule ("owner: what it holds").
func NewStateVar(name string, dtype dtypes.DType, rule string) StateVar {
	return StateVar{Name: name, DType: dtype, Rule: rule}
}
