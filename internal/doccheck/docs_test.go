// Package doccheck holds the tests that keep the README and docs/ true to the repository: short
// enough to read, every relative link and anchor resolving, every test they cite existing.
package doccheck

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

const root = "../.."

// The budgets of issue 31: a README a GoMLX user reads in five minutes, and reference pages (docs/
// outside the log) that say what is true today. History goes to docs/log/, which has no budget.
const (
	readmeBudget    = 8_000
	referenceBudget = 40_000
)

// markdownFiles are the README, CONTRIBUTING and every page under docs/, the log included.
func markdownFiles(t *testing.T) []string {
	files := []string{"README.md", "CONTRIBUTING.md"}
	err := filepath.WalkDir(filepath.Join(root, "docs"), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(path, ".md") {
			rel, _ := filepath.Rel(root, path)
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func read(t *testing.T, rel string) string {
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestREADMEAndReferencePagesStayShort(t *testing.T) {
	if n := len(read(t, "README.md")); n > readmeBudget {
		t.Errorf("README.md is %d bytes, over its %d: move details into docs/", n, readmeBudget)
	}
	total := 0
	for _, f := range markdownFiles(t) {
		if strings.HasPrefix(f, "docs/") && !strings.HasPrefix(f, "docs/log/") {
			total += len(read(t, f))
		}
	}
	if total > referenceBudget {
		t.Errorf("the reference pages (docs/ outside docs/log/) are %d bytes, over their %d: condense, or move history to docs/log/", total, referenceBudget)
	}
}

var (
	linkPattern    = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	headingPattern = regexp.MustCompile(`(?m)^#+ (.+)$`)
	testPattern    = regexp.MustCompile("`((?:Test|Fuzz|Example)[A-Za-z0-9_]+)`")
	testFuncs      = regexp.MustCompile(`(?m)^func ((?:Test|Fuzz|Example)\w+)\(`)
)

// anchor is GitHub's slug of a heading: lower case, letters, digits, '-' and '_' kept, spaces as
// hyphens, everything else (punctuation, symbols such as '×' or '—') dropped.
func anchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

func TestDocLinksResolve(t *testing.T) {
	for _, f := range markdownFiles(t) {
		text := read(t, f)
		for _, m := range linkPattern.FindAllStringSubmatch(text, -1) {
			link := m[1]
			if strings.Contains(link, "://") || strings.HasPrefix(link, "mailto:") {
				continue
			}
			path, frag, _ := strings.Cut(link, "#")
			target := f
			if path != "" {
				target = filepath.Join(filepath.Dir(f), path)
			}
			if _, err := os.Stat(filepath.Join(root, target)); err != nil {
				t.Errorf("%s links to %s, which does not exist", f, link)
				continue
			}
			if frag == "" || !strings.HasSuffix(target, ".md") {
				continue
			}
			found := false
			for _, h := range headingPattern.FindAllStringSubmatch(read(t, target), -1) {
				found = found || anchor(h[1]) == frag
			}
			if !found {
				t.Errorf("%s links to %s: %s has no heading with that anchor", f, link, target)
			}
		}
	}
}

func TestCitedTestsExist(t *testing.T) {
	defined := map[string]bool{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if strings.HasSuffix(path, "_test.go") {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, m := range testFuncs.FindAllStringSubmatch(string(b), -1) {
				defined[m[1]] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range markdownFiles(t) {
		if strings.HasPrefix(f, "docs/log/") {
			continue // the log cites tests as they were named then
		}
		for _, m := range testPattern.FindAllStringSubmatch(read(t, f), -1) {
			if !defined[m[1]] {
				t.Errorf("%s cites %s, which no test file defines", f, m[1])
			}
		}
	}
}
