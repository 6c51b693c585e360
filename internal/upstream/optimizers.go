package upstream

import (
	"strings"

	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/train/optimizer"
)

// GoMLX's optimizers keep a variable's state in variables of its shape named after it, and
// expose no list of them: Adam, AdamW and RMSProp (optimizer/adam.go, getMomentVariables) keep
// "<name>_1st_moment" (not RMSProp) and "<name>_2nd_moment" under "/<their scope>/<the
// variable's scope>". The projector finds its coefficient variables' moments by this rule, to
// rotate them with the basis; its own coefficient-shaped state (the curvature signal's history)
// follows the same rule. Pinned by TestOptimizerStateNaming.

// SecondMomentSuffix ends the name of the state of an optimizer that normalises its steps
// elementwise (Adam, AdamW, RMSProp): its step's length does not follow the gradient's.
const SecondMomentSuffix = "_2nd_moment"

// IsStateOf says whether sv is state kept for v by that rule: a variable other than v, named
// after v ("<v's name>_…"), in a scope that ends with v's scope, of v's shape.
func IsStateOf(sv, v *model.Variable) bool {
	return sv != v && strings.HasPrefix(sv.Name(), v.Name()+"_") &&
		strings.HasSuffix(sv.Scope(), v.Scope()) && sv.Shape().Equal(v.Shape())
}

// IsSecondMoment says whether sv is an optimizer's second moment (SecondMomentSuffix).
func IsSecondMoment(sv *model.Variable) bool { return strings.HasSuffix(sv.Name(), SecondMomentSuffix) }

// NormalisesSteps says whether a variable's state (IsStateOf) holds a second moment: the
// optimizer normalises its steps elementwise.
func NormalisesSteps(state []*model.Variable) bool {
	for _, sv := range state {
		if IsSecondMoment(sv) {
			return true
		}
	}
	return false
}

// LearningRate returns the value in g of the learning-rate variable GoMLX's optimizers keep
// (optimizer.LearningRateVar: "learning_rate" in scope "/optimizers"), or nil where the
// optimizer keeps none there.
func LearningRate(scope *model.Scope, g *Graph) *Node {
	v := scope.At(optimizer.Scope).GetVariable(optimizer.ParamLearningRate)
	if v == nil {
		return nil
	}
	return v.NodeValue(g)
}
