package data

import (
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestStratifiedSplit(t *testing.T) {
	d, err := BreastCancer(testdataDir(t))
	if err != nil {
		t.Fatal(err)
	}
	orig := subset(d, seq(len(d.X)), "")
	counts := d.ClassCounts()
	for _, frac := range []float64{0.2, 0.25, 0.5} {
		trainIdx, testIdx := stratifiedIndices(d, frac, 7)
		// Disjoint and covering all rows.
		all := append(slices.Clone(trainIdx), testIdx...)
		slices.Sort(all)
		if !slices.Equal(all, seq(len(d.X))) {
			t.Fatalf("frac %v: train and test indices are not a partition of all %d rows", frac, len(d.X))
		}
		train, test := StratifiedSplit(d, frac, 7)
		if len(train.X)+len(test.X) != len(d.X) {
			t.Fatalf("frac %v: %d + %d rows, want %d", frac, len(train.X), len(test.X), len(d.X))
		}
		requireRowsOf(t, d, test, testIdx, fmt.Sprintf("frac %v: test", frac))
		requireRowsOf(t, d, train, trainIdx, fmt.Sprintf("frac %v: train", frac))
		checkClassRatios(t, counts, train, test, frac)
		if train.Name != "breast_cancer/train" || test.Name != "breast_cancer/test" || test.NumClasses != 2 || len(test.FeatureNames) != 30 {
			t.Errorf("metadata not carried over: %q %q %d %d", train.Name, test.Name, test.NumClasses, len(test.FeatureNames))
		}
		// Deterministic for a seed, different for another seed.
		train2, test2 := StratifiedSplit(d, frac, 7)
		if !reflect.DeepEqual(train, train2) || !reflect.DeepEqual(test, test2) {
			t.Errorf("frac %v: two splits with the same seed differ", frac)
		}
		_, test3 := StratifiedSplit(d, frac, 8)
		if reflect.DeepEqual(test, test3) {
			t.Errorf("frac %v: seeds 7 and 8 give the same split", frac)
		}
		// The split holds copies: standardising it leaves d untouched.
		Standardize(train, test)
		if !reflect.DeepEqual(d, orig) {
			t.Fatalf("frac %v: standardising the split modified the original dataset", frac)
		}
	}
	// Each small class keeps at least one sample on each side.
	tiny := &Dataset{Name: "tiny", X: [][]float64{{0}, {1}, {2}, {3}, {4}}, Y: []int{0, 0, 0, 1, 1}, NumClasses: 2}
	tr, te := StratifiedSplit(tiny, 0.1, 1)
	if !slices.Equal(tr.ClassCounts(), []int{2, 1}) || !slices.Equal(te.ClassCounts(), []int{1, 1}) {
		t.Errorf("tiny split: train %v test %v, want [2 1] and [1 1]", tr.ClassCounts(), te.ClassCounts())
	}
}

func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

func columnStats(x [][]float64, j int) (mean, std float64) {
	for _, row := range x {
		mean += row[j]
	}
	mean /= float64(len(x))
	for _, row := range x {
		std += (row[j] - mean) * (row[j] - mean)
	}
	return mean, math.Sqrt(std / float64(len(x)))
}

func TestStandardize(t *testing.T) {
	dir := testdataDir(t)
	d, err := DigitsOneVsRest(dir, 3)
	if err != nil {
		t.Fatal(err)
	}
	train, test := StratifiedSplit(d, 0.25, 1)
	constant := make([]bool, 64)
	for j := range constant {
		_, std := columnStats(train.X, j)
		constant[j] = std == 0
	}
	if !constant[0] { // pixel_0_0 is always blank
		t.Fatal("expected pixel_0_0 to be constant in the digits training set")
	}
	Standardize(train, test)
	for j := range 64 {
		mean, std := columnStats(train.X, j)
		if constant[j] {
			if mean != 0 || std != 0 {
				t.Errorf("constant feature %d: mean %v std %v after standardising, want 0 0", j, mean, std)
			}
			for i, row := range test.X {
				if row[j] != 0 {
					t.Errorf("constant feature %d: test row %d is %v, want 0", j, i, row[j])
				}
			}
			continue
		}
		if math.Abs(mean) > 1e-9 || math.Abs(std-1) > 1e-9 {
			t.Errorf("feature %d: train mean %v std %v, want 0 and 1", j, mean, std)
		}
	}
	for _, ds := range []*Dataset{train, test} {
		for i, row := range ds.X {
			for j, v := range row {
				if math.IsNaN(v) || math.IsInf(v, 0) {
					t.Fatalf("%s X[%d][%d] = %v", ds.Name, i, j, v)
				}
			}
		}
	}

	// The test set is transformed with the training statistics.
	tr := &Dataset{X: [][]float64{{1, 5}, {3, 5}}}
	te := &Dataset{X: [][]float64{{5, 9}}}
	Standardize(tr, te)
	if !slices.Equal(tr.X[0], []float64{-1, 0}) || !slices.Equal(tr.X[1], []float64{1, 0}) || !slices.Equal(te.X[0], []float64{3, 0}) {
		t.Errorf("got train %v test %v, want [[-1 0] [1 0]] and [[3 0]]", tr.X, te.X)
	}
	Standardize(&Dataset{X: [][]float64{{1}, {2}}}, nil) // nil test set is allowed
}

func TestSynthetic(t *testing.T) {
	a := Synthetic(42, 1000, 20)
	checkShape(t, a, 1000, 20, 2)
	if c := a.ClassCounts(); c[0] < 450 || c[1] < 450 {
		t.Errorf("class counts %v, want roughly balanced", c)
	}
	if !reflect.DeepEqual(a, Synthetic(42, 1000, 20)) {
		t.Error("Synthetic is not deterministic for a fixed seed")
	}
	b := Synthetic(43, 1000, 20)
	if reflect.DeepEqual(a.X, b.X) || reflect.DeepEqual(a.Y, b.Y) {
		t.Error("Synthetic gives the same data for seeds 42 and 43")
	}
	roles := map[string]int{}
	for _, name := range a.FeatureNames {
		roles[strings.SplitN(name, "_", 2)[0]]++
	}
	if roles["informative"] != 5 || roles["redundant"] != 3 || roles["noise"] != 12 {
		t.Errorf("feature roles %v, want 5 informative, 3 redundant, 12 noise", roles)
	}
	// Degenerate sizes still work.
	for _, f := range []int{1, 2, 3, 6} {
		checkShape(t, Synthetic(1, 7, f), 7, f, 2)
	}
}

// logisticAccuracy trains a plain L2-regularised logistic regression by full
// batch gradient descent and returns its accuracy on test.
func logisticAccuracy(train, test *Dataset) float64 {
	nf := len(train.X[0])
	w := make([]float64, nf)
	var b float64
	grad := make([]float64, nf)
	const lr, l2, epochs = 0.5, 1e-3, 500
	n := float64(len(train.X))
	for range epochs {
		clear(grad)
		var gb float64
		for i, x := range train.X {
			z := b
			for j, v := range x {
				z += w[j] * v
			}
			e := 1/(1+math.Exp(-z)) - float64(train.Y[i])
			for j, v := range x {
				grad[j] += e * v
			}
			gb += e
		}
		for j := range w {
			w[j] -= lr * (grad[j]/n + l2*w[j])
		}
		b -= lr * gb / n
	}
	correct := 0
	for i, x := range test.X {
		z := b
		for j, v := range x {
			z += w[j] * v
		}
		if (z > 0) == (test.Y[i] == 1) {
			correct++
		}
	}
	return float64(correct) / float64(len(test.X))
}

func TestSyntheticLearnable(t *testing.T) {
	if testing.Short() {
		t.Skip("trains logistic regressions")
	}
	var sum float64
	seeds := []int64{1, 2, 3, 4, 5}
	for _, seed := range seeds {
		d := Synthetic(seed, 1000, 20)
		train, test := StratifiedSplit(d, 0.25, seed)
		Standardize(train, test)
		acc := logisticAccuracy(train, test)
		t.Logf("seed %d: logistic regression test accuracy %.3f", seed, acc)
		sum += acc
	}
	if mean := sum / float64(len(seeds)); mean < 0.83 || mean > 0.96 {
		t.Errorf("mean logistic regression accuracy %.3f, want roughly 0.85-0.95", mean)
	}
}

// requireRowsOf fails unless split's rows are d's rows at idx, in order.
func requireRowsOf(t *testing.T, d, split *Dataset, idx []int, what string) {
	t.Helper()
	for i, j := range idx {
		if !slices.Equal(split.X[i], d.X[j]) || split.Y[i] != d.Y[j] {
			t.Fatalf("%s row %d does not match dataset row %d", what, i, j)
		}
	}
}

// checkClassRatios checks that a split keeps each class's share to within one sample and loses
// none (counts: the whole dataset's class counts).
func checkClassRatios(t *testing.T, counts []int, train, test *Dataset, frac float64) {
	t.Helper()
	testCounts, trainCounts := test.ClassCounts(), train.ClassCounts()
	for c := range counts {
		ideal := frac * float64(counts[c])
		if math.Abs(float64(testCounts[c])-ideal) > 1 {
			t.Errorf("frac %v class %d: %d test samples, ideal %.1f", frac, c, testCounts[c], ideal)
		}
		if trainCounts[c]+testCounts[c] != counts[c] {
			t.Errorf("frac %v class %d: %d + %d != %d", frac, c, trainCounts[c], testCounts[c], counts[c])
		}
	}
}
