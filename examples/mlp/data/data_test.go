package data

import (
	"compress/gzip"
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func testdataDir(t *testing.T) string {
	t.Helper()
	dir, err := FindTestdata()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func checkShape(t *testing.T, d *Dataset, rows, cols, classes int) {
	t.Helper()
	if len(d.X) != rows || len(d.Y) != rows {
		t.Fatalf("%s: got %d rows and %d labels, want %d", d.Name, len(d.X), len(d.Y), rows)
	}
	for i, row := range d.X {
		if len(row) != cols {
			t.Fatalf("%s: row %d has %d features, want %d", d.Name, i, len(row), cols)
		}
		for j, v := range row {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				t.Fatalf("%s: X[%d][%d] = %v", d.Name, i, j, v)
			}
		}
	}
	if d.NumClasses != classes {
		t.Fatalf("%s: NumClasses = %d, want %d", d.Name, d.NumClasses, classes)
	}
	if d.FeatureNames != nil && len(d.FeatureNames) != cols {
		t.Fatalf("%s: %d feature names for %d features", d.Name, len(d.FeatureNames), cols)
	}
	for i, y := range d.Y {
		if y < 0 || y >= classes {
			t.Fatalf("%s: Y[%d] = %d outside [0, %d)", d.Name, i, y, classes)
		}
	}
}

func TestFindTestdata(t *testing.T) {
	dir := testdataDir(t)
	if filepath.Base(dir) != "testdata" {
		t.Errorf("FindTestdata() = %q, want a directory named testdata", dir)
	}
	if !isFile(filepath.Join(dir, "README.md")) || !isFile(filepath.Join(filepath.Dir(dir), "go.mod")) {
		t.Errorf("FindTestdata() = %q, which is not next to a go.mod or lacks README.md", dir)
	}

	t.Run("not found", func(t *testing.T) {
		t.Chdir(t.TempDir())
		_, err := FindTestdata()
		if err == nil || !strings.Contains(err.Error(), "testdata/README.md") || !strings.Contains(err.Error(), "go.mod") {
			t.Fatalf("FindTestdata() outside the repository: err = %v, want a message about go.mod and testdata/README.md", err)
		}
	})
}

func TestBreastCancer(t *testing.T) {
	d, err := BreastCancer(testdataDir(t))
	if err != nil {
		t.Fatal(err)
	}
	checkShape(t, d, 569, 30, 2)
	if got := d.ClassCounts(); !slices.Equal(got, []int{212, 357}) {
		t.Errorf("class counts (malignant, benign) = %v, want [212 357]", got)
	}
	if d.X[0][0] != 17.99 || d.X[0][29] != 0.1189 || d.Y[0] != 0 {
		t.Errorf("first row starts %v, ends %v, label %d; want 17.99 ... 0.1189, label 0", d.X[0][0], d.X[0][29], d.Y[0])
	}
	if d.FeatureNames[0] != "mean radius" || d.FeatureNames[29] != "worst fractal dimension" {
		t.Errorf("unexpected feature names %q ... %q", d.FeatureNames[0], d.FeatureNames[29])
	}
}

func TestDigitsOneVsRest(t *testing.T) {
	dir := testdataDir(t)
	perDigit := []int{178, 182, 177, 183, 181, 182, 181, 179, 174, 180}
	for digit, want := range perDigit {
		d, err := DigitsOneVsRest(dir, digit)
		if err != nil {
			t.Fatal(err)
		}
		checkShape(t, d, 1797, 64, 2)
		if got := d.ClassCounts(); got[1] != want || got[0] != 1797-want {
			t.Errorf("digit %d: class counts %v, want [%d %d]", digit, got, 1797-want, want)
		}
	}
	d, err := DigitsOneVsRest(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	if d.ClassCounts()[1] != 178 {
		t.Errorf("digit 0 has %d positives, want 178", d.ClassCounts()[1])
	}
	if d.FeatureNames[9] != "pixel_1_1" {
		t.Errorf("FeatureNames[9] = %q, want pixel_1_1", d.FeatureNames[9])
	}
	for i, row := range d.X {
		for j, v := range row {
			if v < 0 || v > 16 || v != math.Trunc(v) {
				t.Fatalf("pixel X[%d][%d] = %v, want an integer in 0..16", i, j, v)
			}
		}
	}
	for _, bad := range []int{-1, 10} {
		if _, err := DigitsOneVsRest(dir, bad); err == nil || !strings.Contains(err.Error(), "0..9") {
			t.Errorf("DigitsOneVsRest(dir, %d): err = %v, want an error about 0..9", bad, err)
		}
	}
}

func TestDiabetesBinarised(t *testing.T) {
	d, err := DiabetesBinarised(testdataDir(t))
	if err != nil {
		t.Fatal(err)
	}
	checkShape(t, d, 442, 10, 2)
	counts := d.ClassCounts()
	if diff := counts[0] - counts[1]; diff < -2 || diff > 2 {
		t.Errorf("class counts %v are not close to 50/50", counts)
	}
	if !slices.Equal(counts, []int{221, 221}) {
		t.Errorf("class counts %v, want exactly [221 221] for the shipped file (median 140.5)", counts)
	}
	if want := []float64{59, 2, 32.1, 101, 157, 93.2, 38, 4, 4.8598, 87}; !slices.Equal(d.X[0], want) {
		t.Errorf("first row %v, want %v", d.X[0], want)
	}
	if d.Y[0] != 1 { // target 151 > 140.5
		t.Errorf("Y[0] = %d, want 1 (target 151 is above the median)", d.Y[0])
	}
}

func TestMedianTieRule(t *testing.T) {
	// Odd count: the middle value is the median and counts as class 0.
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median = %v, want 2", m)
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Errorf("median = %v, want 2.5", m)
	}
	dir := t.TempDir()
	writeGzip(t, filepath.Join(dir, DiabetesDataFile), "1 2 3 4 5 6 7 8 9 10\n"+strings.Repeat("0 0 0 0 0 0 0 0 0 0\n", 2))
	writeGzip(t, filepath.Join(dir, DiabetesTargetFile), "1\n2\n3\n")
	d, err := DiabetesBinarised(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(d.Y, []int{0, 0, 1}) {
		t.Errorf("labels %v for targets 1,2,3 (median 2), want [0 0 1]: equal to the median is 0", d.Y)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func writeGzip(t *testing.T, path, content string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	zw := gzip.NewWriter(f)
	if _, err := zw.Write([]byte(content)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func wantParseError(t *testing.T, err error, file string, line, column int, fragment string) {
	t.Helper()
	if err == nil {
		t.Fatalf("expected an error for malformed %s, got nil", file)
	}
	msg := err.Error()
	var pe *ParseError
	if !errors.As(err, &pe) {
		t.Fatalf("error %q is not a *ParseError", msg)
	}
	if filepath.Base(pe.Path) != file || pe.Line != line || pe.Column != column {
		t.Errorf("ParseError at %s line %d column %d, want %s line %d column %d (%q)",
			filepath.Base(pe.Path), pe.Line, pe.Column, file, line, column, msg)
	}
	for _, want := range []string{file, "line " + strconv.Itoa(line), fragment} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	if column > 0 && !strings.Contains(msg, "column "+strconv.Itoa(column)) {
		t.Errorf("error %q does not mention column %d", msg, column)
	}
}

func TestMalformedBreastCancer(t *testing.T) {
	for _, tc := range []struct {
		name, content string
		line, column  int
		want          string
	}{
		{"bad number in breast cancer", "2,3,malignant,benign\n1,2,3,0\n4,5x,6,1\n", 3, 2, `"5x" is not a finite number`},
		{"NaN rejected", "1,3,malignant,benign\n1,NaN,3,0\n", 2, 2, "not a finite number"},
		{"bad label", "1,3,malignant,benign\n1,2,3,2\n", 2, 4, "class label"},
		{"wrong field count", "2,3,malignant,benign\n1,2,3,0\n1,2,0\n", 3, 0, "expected 4 fields"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, BreastCancerFile), tc.content)
			_, err := BreastCancer(dir)
			wantParseError(t, err, BreastCancerFile, tc.line, tc.column, tc.want)
		})
	}
	t.Run("row count differs from header", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, BreastCancerFile), "3,3,malignant,benign\n1,2,3,0\n")
		_, err := BreastCancer(dir)
		if err == nil || !strings.Contains(err.Error(), "announces 3 samples") {
			t.Fatalf("err = %v, want a sample-count mismatch", err)
		}
	})
}

func TestMalformedDigits(t *testing.T) {
	t.Run("bad pixel in gzipped digits", func(t *testing.T) {
		dir := t.TempDir()
		good := strings.Repeat("0,", 64) + "3\n"
		bad := strings.Repeat("0,", 10) + "oops," + strings.Repeat("0,", 53) + "3\n"
		writeGzip(t, filepath.Join(dir, DigitsFile), good+good+bad)
		_, err := DigitsOneVsRest(dir, 3)
		wantParseError(t, err, DigitsFile, 3, 11, `"oops"`)
	})
	t.Run("corrupt gzip", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, DigitsFile), "not gzip at all\n")
		_, err := DigitsOneVsRest(dir, 3)
		if err == nil || !strings.Contains(err.Error(), DigitsFile) || !strings.Contains(err.Error(), "gzip") {
			t.Fatalf("err = %v, want an error naming the file and gzip", err)
		}
	})
}

func TestMalformedDiabetes(t *testing.T) {
	t.Run("bad diabetes target", func(t *testing.T) {
		dir := t.TempDir()
		writeGzip(t, filepath.Join(dir, DiabetesDataFile), strings.Repeat("1 2 3 4 5 6 7 8 9 10\n", 3))
		writeGzip(t, filepath.Join(dir, DiabetesTargetFile), "1.5e+02\n7.5e+01\n1.4e+02x\n")
		_, err := DiabetesBinarised(dir)
		wantParseError(t, err, DiabetesTargetFile, 3, 1, `"1.4e+02x"`)
	})
	t.Run("bad diabetes feature", func(t *testing.T) {
		dir := t.TempDir()
		writeGzip(t, filepath.Join(dir, DiabetesDataFile), "1 2 3 4 5 6 7 8 9 10\n1 2 3 4 5 6 7 - 9 10\n")
		writeGzip(t, filepath.Join(dir, DiabetesTargetFile), "1\n2\n")
		_, err := DiabetesBinarised(dir)
		wantParseError(t, err, DiabetesDataFile, 2, 8, `"-"`)
	})
	t.Run("diabetes row mismatch", func(t *testing.T) {
		dir := t.TempDir()
		writeGzip(t, filepath.Join(dir, DiabetesDataFile), "1 2 3 4 5 6 7 8 9 10\n")
		writeGzip(t, filepath.Join(dir, DiabetesTargetFile), "1\n2\n")
		_, err := DiabetesBinarised(dir)
		if err == nil || !strings.Contains(err.Error(), "has 1 rows") || !strings.Contains(err.Error(), "has 2") {
			t.Fatalf("err = %v, want a row-count mismatch", err)
		}
	})
}

func TestMissingFile(t *testing.T) {
	dir := t.TempDir()
	loaders := map[string]func() error{
		BreastCancerFile: func() error { _, err := BreastCancer(dir); return err },
		DigitsFile:       func() error { _, err := DigitsOneVsRest(dir, 0); return err },
		DiabetesDataFile: func() error { _, err := DiabetesBinarised(dir); return err },
	}
	for file, load := range loaders {
		err := load()
		if err == nil {
			t.Fatalf("%s: expected an error for a missing file", file)
		}
		msg := err.Error()
		if !strings.Contains(msg, filepath.Join(dir, file)) || !strings.Contains(msg, "testdata/") || !strings.Contains(msg, "not found") {
			t.Errorf("error %q should name %s, say it was not found and point at testdata/", msg, filepath.Join(dir, file))
		}
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("error %q does not wrap fs.ErrNotExist", msg)
		}
	}
}
