package upstream

import (
	"reflect"

	"strings"

	"github.com/gomlx/compute/shapes"

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
	return sv != v && IsStateAt(sv, v.Scope(), v.Name(), v.Shape())
}

// IsStateAt is IsStateOf for a variable named name in scope, of shape, whether or not the
// store holds it.
func IsStateAt(sv *model.Variable, scope, name string, shape shapes.Shape) bool {
	return strings.HasPrefix(sv.Name(), name+"_") && strings.HasSuffix(sv.Scope(), scope) && sv.Shape().Equal(shape)
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

// UpdatesElementwise says whether opt is one of GoMLX's own optimizers (SGD, Adam, AdamW,
// RMSProp, Adamax: optimizer/optimizer.go, adam.go), whose update of a variable is the same
// arithmetic on each element: stepping a stack of variables as one is then the same as
// stepping each. An optimizer from elsewhere may normalise or orthogonalise a variable as a
// whole, and is given each variable on its own.
func UpdatesElementwise(opt optimizer.Interface) bool {
	t := reflect.TypeOf(opt)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t != nil && t.PkgPath() == reflect.TypeOf(optimizer.SGDConfig{}).PkgPath()
}
