package data

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// StratifiedSplit divides d into a training and a test set, separately for
// each class, so that both keep d's class proportions. It is deterministic:
// the same d, testFraction and seed always give the same split.
//
// For a class with m samples, round(testFraction·m) of them (ties rounded
// away from zero) go to the test set, chosen uniformly at random; when
// 0 < testFraction < 1 and m >= 2 that number is clamped to [1, m-1] so the
// class appears on both sides. Each class's test count is therefore within
// one sample of testFraction·m. The rows of train and test are then shuffled
// (with the same seeded source) so that classes are interleaved.
//
// The returned datasets hold copies of the rows, so modifying them (e.g.
// with [Standardize]) leaves d untouched. Name gets a "/train" or "/test"
// suffix; NumClasses and FeatureNames are copied. It panics if testFraction
// is not in [0, 1] or a label is outside [0, d.NumClasses).
func StratifiedSplit(d *Dataset, testFraction float64, seed int64) (train, test *Dataset) {
	trainIdx, testIdx := stratifiedIndices(d, testFraction, seed)
	return subset(d, trainIdx, "/train"), subset(d, testIdx, "/test")
}

// stratifiedIndices returns the row indices of the training and test sets
// chosen by StratifiedSplit, in their final order.
func stratifiedIndices(d *Dataset, testFraction float64, seed int64) (trainIdx, testIdx []int) {
	if !(testFraction >= 0 && testFraction <= 1) {
		panic(fmt.Sprintf("data.StratifiedSplit: testFraction must be in [0, 1], got %v", testFraction))
	}
	if len(d.Y) != len(d.X) {
		panic(fmt.Sprintf("data.StratifiedSplit: dataset %q has %d rows but %d labels", d.Name, len(d.X), len(d.Y)))
	}
	byClass := make([][]int, d.NumClasses)
	for i, y := range d.Y {
		if y < 0 || y >= d.NumClasses {
			panic(fmt.Sprintf("data.StratifiedSplit: dataset %q row %d has label %d outside [0, %d)", d.Name, i, y, d.NumClasses))
		}
		byClass[y] = append(byClass[y], i)
	}
	rng := rand.New(rand.NewPCG(uint64(seed), splitStream))
	for _, idx := range byClass {
		m := len(idx)
		nTest := int(math.Round(testFraction * float64(m)))
		if testFraction > 0 && testFraction < 1 && m >= 2 {
			nTest = max(1, min(nTest, m-1))
		}
		rng.Shuffle(m, func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
		testIdx = append(testIdx, idx[:nTest]...)
		trainIdx = append(trainIdx, idx[nTest:]...)
	}
	rng.Shuffle(len(trainIdx), func(i, j int) { trainIdx[i], trainIdx[j] = trainIdx[j], trainIdx[i] })
	rng.Shuffle(len(testIdx), func(i, j int) { testIdx[i], testIdx[j] = testIdx[j], testIdx[i] })
	return trainIdx, testIdx
}

// subset returns a deep copy of the given rows of d.
func subset(d *Dataset, idx []int, suffix string) *Dataset {
	s := &Dataset{
		Name:         d.Name + suffix,
		X:            make([][]float64, len(idx)),
		Y:            make([]int, len(idx)),
		NumClasses:   d.NumClasses,
		FeatureNames: slices.Clone(d.FeatureNames),
	}
	for i, j := range idx {
		s.X[i] = slices.Clone(d.X[j])
		s.Y[i] = d.Y[j]
	}
	return s
}

// Standardize rescales every feature to zero mean and unit variance, in
// place, using the mean and (population, divide-by-n) standard deviation
// computed on train only; the same transformation is applied to test, so no
// information leaks from the test set. test may be nil.
//
// A feature that is constant on train (zero standard deviation) carries no
// information the model could learn, so it is set to 0 in both train and
// test rather than divided by zero: the result never contains NaN or Inf.
// It panics if train is empty or the two datasets have different numbers of
// features.
func Standardize(train, test *Dataset) {
	if train == nil || len(train.X) == 0 {
		panic("data.Standardize: the training set is empty")
	}
	nf := len(train.X[0])
	check := func(ds *Dataset, which string) {
		for i, row := range ds.X {
			if len(row) != nf {
				panic(fmt.Sprintf("data.Standardize: %s row %d has %d features, want %d", which, i, len(row), nf))
			}
		}
	}
	check(train, "train")
	if test != nil {
		check(test, "test")
	}
	n := float64(len(train.X))
	mean := make([]float64, nf)
	scale := make([]float64, nf) // 1/std, or 0 for a constant feature
	for j := range nf {
		lo, hi, sum := math.Inf(1), math.Inf(-1), 0.0
		for _, row := range train.X {
			v := row[j]
			lo, hi = min(lo, v), max(hi, v)
			sum += v
		}
		mu := sum / n
		mean[j] = mu
		if lo == hi {
			continue // constant on train: scale stays 0
		}
		ss := 0.0
		for _, row := range train.X {
			dv := row[j] - mu
			ss += dv * dv
		}
		if inv := 1 / math.Sqrt(ss/n); !math.IsInf(inv, 0) { // guards against underflow of ss
			scale[j] = inv
		}
	}
	apply := func(ds *Dataset) {
		for _, row := range ds.X {
			for j := range row {
				row[j] = (row[j] - mean[j]) * scale[j]
			}
		}
	}
	apply(train)
	if test != nil {
		apply(test)
	}
}
