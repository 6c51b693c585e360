package data

import (
	"bytes"
	"compress/gzip"
	"math"
	"os"
	"path/filepath"
	"testing"
)

// checkDataset asserts what every successful load must give: consistent rows, the stated number
// of features, labels in range, finite values.
func checkDataset(t *testing.T, d *Dataset, features int) {
	t.Helper()
	if len(d.X) != len(d.Y) {
		t.Fatalf("%d rows but %d labels", len(d.X), len(d.Y))
	}
	for i, row := range d.X {
		if len(row) != features {
			t.Fatalf("row %d has %d features, want %d", i, len(row), features)
		}
		for _, v := range row {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				t.Fatalf("row %d holds a non-finite value", i)
			}
		}
		if d.Y[i] < 0 || d.Y[i] >= d.NumClasses {
			t.Fatalf("row %d has label %d outside [0, %d)", i, d.Y[i], d.NumClasses)
		}
	}
}

// FuzzBreastCancer: any file content loads consistently or fails with an error, never a panic.
func FuzzBreastCancer(f *testing.F) {
	real, err := os.ReadFile(filepath.Join("..", "..", "..", "testdata", BreastCancerFile))
	if err == nil {
		lines := bytes.SplitAfterN(real, []byte("\n"), 4)
		f.Add(bytes.Join(lines[:3], nil)) // header and two rows
	}
	f.Add([]byte("2,30,malignant,benign\n"))
	f.Add([]byte("1,30\n" + "1,2,3\n"))
	f.Add([]byte("1,1,malignant,benign\n2.5,1\n")) // a header announcing another feature count (found by CI's fuzz run)
	f.Fuzz(func(t *testing.T, content []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, BreastCancerFile), content, 0o644); err != nil {
			t.Fatal(err)
		}
		d, err := BreastCancer(dir)
		if err != nil || len(d.X) == 0 {
			return
		}
		// The header announces the feature count (30 in the real file); every row must match it,
		// and the feature names are given exactly when they describe the row.
		checkDataset(t, d, len(d.X[0]))
		if d.FeatureNames != nil && len(d.FeatureNames) != len(d.X[0]) {
			t.Fatalf("%d feature names for %d features", len(d.FeatureNames), len(d.X[0]))
		}
	})
}

// FuzzDigits: the fuzzed text is gzip-compressed as the real file is, so the parser is reached.
func FuzzDigits(f *testing.F) {
	f.Add([]byte("0,0,5,13,9,1,0,0,0,0,13,15,10,15,5,0,0,3,15,2,0,11,8,0,0,4,12,0,0,8,8,0,0,5,8,0,0,9,8,0,0,4,11,0,1,12,7,0,0,2,14,5,10,12,0,0,0,0,6,13,10,0,0,0,0\n"))
	f.Add([]byte("1,2\n"))
	f.Add([]byte("nan,0\n"))
	f.Fuzz(func(t *testing.T, content []byte) {
		dir := t.TempDir()
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		_, _ = zw.Write(content)
		_ = zw.Close()
		if err := os.WriteFile(filepath.Join(dir, DigitsFile), buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		d, err := DigitsOneVsRest(dir, 0)
		if err == nil {
			checkDataset(t, d, 64)
		}
	})
}
