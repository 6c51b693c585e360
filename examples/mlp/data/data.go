// Package data loads the small benchmark datasets used by the MLP example.
//
// Three real datasets ship in the repository's testdata/ directory, copied
// byte for byte from the Debian package python3-sklearn 1.2.1+dfsg-1 (see
// testdata/README.md for provenance, licences and checksums):
//
//   - [BreastCancer]: Wisconsin diagnostic breast cancer, 569 samples,
//     30 features, binary target.
//   - [DigitsOneVsRest]: 8x8 handwritten digits, 1797 samples, 64 features,
//     turned into a binary "this digit versus all others" problem.
//   - [DiabetesBinarised]: diabetes progression, 442 samples, 10 features,
//     regression target turned into "above the median or not".
//
// [Synthetic] generates a deterministic binary problem in pure Go, so that
// code can be exercised without any files.
//
// [StratifiedSplit] and [Standardize] provide the usual train/test split and
// z-score preprocessing. Every loader takes the testdata directory; use
// [FindTestdata] to locate it from anywhere inside the repository.
//
// Only the standard library is used.
package data

import (
	"bufio"
	"compress/gzip"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Dataset is an in-memory classification dataset.
//
// X has one row per sample and one column per feature; all rows have the
// same length. Y[i] is the class of row i, an integer in [0, NumClasses).
type Dataset struct {
	// Name identifies the dataset, e.g. "breast_cancer".
	Name string
	// X holds the features, X[sample][feature].
	X [][]float64
	// Y holds the class labels, one per row of X.
	Y []int
	// NumClasses is the number of distinct classes Y may take.
	NumClasses int
	// FeatureNames names the columns of X, when known (nil otherwise).
	FeatureNames []string
}

// NumSamples returns the number of rows.
func (d *Dataset) NumSamples() int { return len(d.X) }

// NumFeatures returns the number of columns (0 for an empty dataset).
func (d *Dataset) NumFeatures() int {
	if len(d.X) == 0 {
		return len(d.FeatureNames)
	}
	return len(d.X[0])
}

// ClassCounts returns how many samples fall in each class; the slice has
// length NumClasses.
func (d *Dataset) ClassCounts() []int {
	counts := make([]int, d.NumClasses)
	for _, y := range d.Y {
		if y >= 0 && y < len(counts) {
			counts[y]++
		}
	}
	return counts
}

// ParseError reports malformed content in a dataset file.
type ParseError struct {
	// Path is the file being read.
	Path string
	// Line is the 1-based line number (of the decompressed text for .gz files).
	Line int
	// Column is the 1-based field number on that line (field index + 1), or 0
	// when the problem concerns the whole line.
	Column int
	// Msg says what was wrong.
	Msg string
}

func (e *ParseError) Error() string {
	if e.Column > 0 {
		return fmt.Sprintf("data: %s: line %d, column %d (field index %d): %s",
			e.Path, e.Line, e.Column, e.Column-1, e.Msg)
	}
	return fmt.Sprintf("data: %s: line %d: %s", e.Path, e.Line, e.Msg)
}

// FindTestdata locates the repository's testdata/ directory by walking up
// from the current working directory until it finds a directory that holds
// both a go.mod file and testdata/README.md. It returns the path of that
// testdata directory.
func FindTestdata() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("data: cannot find testdata/: getting the working directory: %w", err)
	}
	for dir := wd; ; {
		if isFile(filepath.Join(dir, "go.mod")) && isFile(filepath.Join(dir, "testdata", "README.md")) {
			return filepath.Join(dir, "testdata"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	return "", fmt.Errorf("data: cannot find testdata/: no directory from %s upwards contains both go.mod and testdata/README.md; run from inside the gradsub repository or pass the testdata directory explicitly", wd)
}

func isFile(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}

// resolveDir returns dir, or the result of FindTestdata when dir is empty.
func resolveDir(dir string) (string, error) {
	if dir != "" {
		return dir, nil
	}
	return FindTestdata()
}

// openDataFile opens path, transparently decompressing it when its name ends
// in ".gz". The returned closer releases everything that was opened.
func openDataFile(path string) (io.Reader, func(), error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, fmt.Errorf("data: dataset file %s not found (these files ship in the gradsub repository's testdata/ directory, see testdata/README.md; pass that directory, e.g. the result of FindTestdata): %w", path, err)
		}
		return nil, nil, fmt.Errorf("data: opening dataset file %s: %w", path, err)
	}
	if !strings.HasSuffix(path, ".gz") {
		return f, func() { f.Close() }, nil
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("data: %s: not a readable gzip file: %w", path, err)
	}
	return zr, func() { zr.Close(); f.Close() }, nil
}

// record is one non-empty line of a data file, split into fields.
type record struct {
	line   int
	fields []string
}

// readCommaFile reads a comma-separated file (optionally gzipped).
func readCommaFile(path string) ([]record, error) {
	r, closeFn, err := openDataFile(path)
	if err != nil {
		return nil, err
	}
	defer closeFn()
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1 // field counts are checked by the callers, with better messages
	var recs []record
	for {
		fields, err := cr.Read()
		if err == io.EOF {
			return recs, nil
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return nil, &ParseError{Path: path, Line: pe.Line,
					Msg: fmt.Sprintf("malformed CSV near byte %d of the line: %v", pe.Column, pe.Err)}
			}
			return nil, fmt.Errorf("data: reading %s: %w", path, err)
		}
		line, _ := cr.FieldPos(0)
		recs = append(recs, record{line: line, fields: fields})
	}
}

// readWhitespaceFile reads a file whose fields are separated by runs of
// spaces or tabs (optionally gzipped). Blank lines are skipped.
func readWhitespaceFile(path string) ([]record, error) {
	r, closeFn, err := openDataFile(path)
	if err != nil {
		return nil, err
	}
	defer closeFn()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	var recs []record
	line := 0
	for sc.Scan() {
		line++
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		recs = append(recs, record{line: line, fields: fields})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("data: reading %s after line %d: %w", path, line, err)
	}
	return recs, nil
}

// parseFloat parses field i of rec as a finite float64.
func parseFloat(path string, rec record, i int) (float64, error) {
	s := strings.TrimSpace(rec.fields[i])
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, &ParseError{Path: path, Line: rec.line, Column: i + 1,
			Msg: fmt.Sprintf("%q is not a finite number", rec.fields[i])}
	}
	return v, nil
}

// parseLabel parses field i of rec as an integer class label in [0, numClasses).
// Labels written as integral floats ("3.0", "3.000e+00") are accepted.
func parseLabel(path string, rec record, i, numClasses int) (int, error) {
	v, err := parseFloat(path, rec, i)
	if err != nil {
		return 0, err
	}
	if v != math.Trunc(v) || v < 0 || v >= float64(numClasses) {
		return 0, &ParseError{Path: path, Line: rec.line, Column: i + 1,
			Msg: fmt.Sprintf("class label %q is not an integer in [0, %d)", rec.fields[i], numClasses)}
	}
	return int(v), nil
}

// checkFields returns a ParseError when rec does not have exactly want fields.
func checkFields(path string, rec record, want int, what string) error {
	if len(rec.fields) != want {
		return &ParseError{Path: path, Line: rec.line,
			Msg: fmt.Sprintf("expected %d fields (%s), found %d", want, what, len(rec.fields))}
	}
	return nil
}
