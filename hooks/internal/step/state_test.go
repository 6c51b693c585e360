package step

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

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
	"base step":         {"base.go", "matrix.go", "temporal.go", "stacks.go", "packs.go", "packstore.go", "rotate.go"},
	"temporal basis":    {"temporal.go"},
	"temporal learning": {"temporal.go"},
	"complement":        {"matrix.go"},
	"step-length rule":  {"steplength.go"},
	"gradient history":  {"steplength.go"},
	"matrix scalars":    {"vectors.go"},
}

// stateReaders are the files of this package that read the state without building a rule's part
// of the step (the schema itself, the state's price). Package hooks reads it on the host (the
// Report, the Monitor, the plan, the rank rule's host part).
var stateReaders = []string{"state.go", "price.go"}

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
					call, ok := vs.Values[i].(*ast.CallExpr)
					if !ok || len(call.Args) != 3 || fmt.Sprint(call.Fun) != "&{rules NewStateVar}" {
						continue
					}
					rule, err := strconv.Unquote(call.Args[2].(*ast.BasicLit).Value)
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
	require.Len(t, owners, len(Schema), "every schema entry was found")

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
