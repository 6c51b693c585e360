package hooks

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/stretchr/testify/require"
)

// TestStateSchemaCoversTheStore: every variable the projector keeps in its state scope is an
// entry of the schema (state.go), with the schema's dtype where it fixes one, in both modes with
// every rule on. A state variable written outside the schema fails here.
func TestStateSchemaCoversTheStore(t *testing.T) {
	everyRule := DefaultPolicy()
	everyRule.CheckEvery, everyRule.LossPatience, everyRule.CurvatureFactor, everyRule.FullUpdateEvery = 2, 2, 10, 1
	for name, opt := range map[string]*Optimizer{
		"matrix":   Subspace(optimizer.Adam().LearningRate(0.01).Done()).Rank(3).WarmUp(4).Policy(everyRule).RankBounds(2, 6).Done(),
		"temporal": Subspace(optimizer.Adam().LearningRate(0.01).Done()).Mode(Temporal).Rank(3).WarmUp(4).Policy(everyRule).Done(),
	} {
		t.Run(name, func(t *testing.T) {
			require.NoError(t, opt.Config().Validate())
			r := newRun(t, opt)
			for range 8 {
				r.step(t)
			}
			root := path.Join("/", StateScope)
			var projected []string
			for _, e := range opt.Plan() {
				if e.Route != RouteFull {
					projected = append(projected, e.Variable)
				}
			}
			require.NotEmpty(t, projected)
			seen := map[string]bool{}
			for v := range r.store.IterVariables() {
				if !strings.HasPrefix(v.Path(), root+"/") {
					continue
				}
				var entry *stateVar
				for i, s := range stateSchema {
					if v.Path() == s.of(root) {
						entry = &stateSchema[i]
					}
					for _, p := range projected {
						if v.Path() == s.ofVariable(root, p) {
							entry = &stateSchema[i]
						}
					}
				}
				require.NotNil(t, entry, "%s is in the state scope but not in the schema (state.go)", v.Path())
				if entry.dtype != 0 {
					require.Equal(t, entry.dtype, v.DType(), v.Path())
				}
				require.False(t, v.Trainable, v.Path())
				seen[entry.name] = true
			}
			for _, s := range []stateVar{svStep, svLossEMA, svLearnings, svBasis, svCoefficients, svResidual, svCurvature} {
				require.True(t, seen[s.name], "%s missing from the store", s.name)
			}
		})
	}
}

// stateOwners maps each rule that owns state (the word before the colon of a schema entry's
// rule) to the files that build its part of the step: only they may read or write its variables
// in the step graph. Other rules see its results, passed as values.
var stateOwners = map[string][]string{
	"schedule":          {"step.go"},
	"guard":             {"guard.go"},
	"loss rule":         {"loss.go"},
	"residual rule":     {"controller.go"},
	"controller":        {"controller.go"},
	"curvature rule":    {"curvature.go"},
	"rank rule":         {"rankrule.go"},
	"tracking":          {"learn.go"},
	"basis":             {"matrix.go", "temporal.go"},
	"base step":         {"matrix.go", "temporal.go"},
	"temporal basis":    {"temporal.go"},
	"temporal learning": {"temporal.go"},
	"complement":        {"matrix.go"},
	"step-length rule":  {"steplength.go"},
	"gradient history":  {"steplength.go"},
}

// stateReaders are the host-side files that read the state from the store (the Report, the
// Monitor, the plan's prices and messages, the rank rule's host part, the schema itself).
var stateReaders = []string{"state.go", "report.go", "monitor.go", "plan.go", "planning.go", "ranks.go", "checkpoints.go"}

// TestStateVariablesHaveOwnersAndStayWithThem walks the schema: every entry names an owning rule,
// and the step-graph code that uses an entry is in its owner's files (no rule reads another's
// variables: the guard takes the smoothed loss from the loss rule, the controller the curvature
// peak from the curvature rule).
func TestStateVariablesHaveOwnersAndStayWithThem(t *testing.T) {
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	parsed := map[string]*ast.File{}
	owners := map[string]string{} // entry's Go name → owner
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, file, nil, 0)
		require.NoError(t, err)
		parsed[file] = f
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.VAR {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					lit, ok := vs.Values[i].(*ast.CompositeLit)
					if !ok || len(lit.Elts) != 3 || fmt.Sprint(lit.Type) != "stateVar" {
						continue
					}
					rule, err := strconv.Unquote(lit.Elts[2].(*ast.BasicLit).Value)
					require.NoError(t, err)
					owner, _, found := strings.Cut(rule, ":")
					require.True(t, found, "%s: its rule %q names no owner (\"owner: what it holds\")", name.Name, rule)
					require.Contains(t, stateOwners, owner, "%s: owner %q is not a known rule", name.Name, owner)
					require.Contains(t, stateOwners[owner], file, "%s is the %s's state: declare it in %v", name.Name, owner, stateOwners[owner])
					owners[name.Name] = owner
				}
			}
		}
	}
	require.Len(t, owners, len(stateSchema), "every schema entry was found")

	for file, f := range parsed {
		if slices.Contains(stateReaders, file) {
			continue
		}
		ast.Inspect(f, func(n ast.Node) bool {
			id, ok := n.(*ast.Ident)
			if !ok {
				return true
			}
			if owner, entry := owners[id.Name]; entry {
				require.Contains(t, stateOwners[owner], file, "%s: %s is the %s's state, built in %v: pass its result, not the variable",
					fset.Position(id.Pos()), id.Name, owner, stateOwners[owner])
			}
			return true
		})
	}
}
