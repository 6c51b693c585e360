package hooks_test

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestREADMESnippetIsCompiled: every line of the README's Go snippet (but its import, which the
// example file has in its import block) stands, white space aside, in Example_oneOption's file,
// which compiles and runs with the tests: the README cannot drift from the API unseen.
func TestREADMESnippetIsCompiled(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	require.NoError(t, err)
	example, err := os.ReadFile("example_test.go")
	require.NoError(t, err)
	squash := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	var compiled []string
	for _, line := range strings.Split(string(example), "\n") {
		compiled = append(compiled, squash(line))
	}
	_, rest, found := strings.Cut(string(readme), "```go\n")
	require.True(t, found, "the README has a Go snippet")
	snippet, _, found := strings.Cut(rest, "```")
	require.True(t, found)
	lines := 0
	for _, line := range strings.Split(snippet, "\n") {
		line = squash(line)
		if line == "" || strings.HasPrefix(line, "import ") {
			continue
		}
		require.Contains(t, compiled, line, "the README's line %q is not in Example_oneOption (example_test.go): change both", line)
		lines++
	}
	require.Positive(t, lines)
}
