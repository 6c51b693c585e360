package data

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
)

// File names, relative to the testdata directory.
const (
	BreastCancerFile   = "breast_cancer.csv"
	DigitsFile         = "digits.csv.gz"
	DiabetesDataFile   = "diabetes_data_raw.csv.gz"
	DiabetesTargetFile = "diabetes_target.csv.gz"
)

var breastCancerFeatureNames = []string{
	"mean radius", "mean texture", "mean perimeter", "mean area",
	"mean smoothness", "mean compactness", "mean concavity",
	"mean concave points", "mean symmetry", "mean fractal dimension",
	"radius error", "texture error", "perimeter error", "area error",
	"smoothness error", "compactness error", "concavity error",
	"concave points error", "symmetry error", "fractal dimension error",
	"worst radius", "worst texture", "worst perimeter", "worst area",
	"worst smoothness", "worst compactness", "worst concavity",
	"worst concave points", "worst symmetry", "worst fractal dimension",
}

var diabetesFeatureNames = []string{"age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"}

// BreastCancer loads the Wisconsin diagnostic breast cancer dataset from
// dir/breast_cancer.csv (dir is the testdata directory; when empty,
// [FindTestdata] is used).
//
// The real file gives 569 samples, 30 real-valued features (unscaled) and 2
// classes, labelled as in the file: 0 = malignant (212 samples),
// 1 = benign (357 samples). Another file in the same format loads with the
// counts its header announces (feature names are set only for 30 features).
//
// The file's first line is a header "n_samples,n_features,name0,name1";
// each following line holds n_features numbers and then the class label.
// The sample and feature counts in the header are checked against the rows.
func BreastCancer(dir string) (*Dataset, error) {
	dir, err := resolveDir(dir)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, BreastCancerFile)
	recs, err := readCommaFile(path)
	if err != nil {
		return nil, err
	}
	if len(recs) == 0 {
		return nil, fmt.Errorf("data: %s: file is empty, expected a header line", path)
	}
	hdr := recs[0]
	if len(hdr.fields) < 4 {
		return nil, &ParseError{Path: path, Line: hdr.line,
			Msg: fmt.Sprintf("header must be n_samples,n_features,class names...; found %d fields", len(hdr.fields))}
	}
	nSamples, err := strconv.Atoi(hdr.fields[0])
	if err != nil || nSamples < 0 {
		return nil, &ParseError{Path: path, Line: hdr.line, Column: 1,
			Msg: fmt.Sprintf("sample count %q is not a non-negative integer", hdr.fields[0])}
	}
	nFeatures, err := strconv.Atoi(hdr.fields[1])
	if err != nil || nFeatures <= 0 {
		return nil, &ParseError{Path: path, Line: hdr.line, Column: 2,
			Msg: fmt.Sprintf("feature count %q is not a positive integer", hdr.fields[1])}
	}
	numClasses := len(hdr.fields) - 2
	rows := recs[1:]
	if len(rows) != nSamples {
		return nil, fmt.Errorf("data: %s: header (line %d) announces %d samples but the file has %d data rows",
			path, hdr.line, nSamples, len(rows))
	}
	d := &Dataset{
		Name:       "breast_cancer",
		X:          make([][]float64, len(rows)),
		Y:          make([]int, len(rows)),
		NumClasses: numClasses,
	}
	if nFeatures == len(breastCancerFeatureNames) {
		d.FeatureNames = slices.Clone(breastCancerFeatureNames)
	}
	for i, rec := range rows {
		if err := checkFields(path, rec, nFeatures+1, fmt.Sprintf("%d features and a class label", nFeatures)); err != nil {
			return nil, err
		}
		x := make([]float64, nFeatures)
		for j := range x {
			if x[j], err = parseFloat(path, rec, j); err != nil {
				return nil, err
			}
		}
		if d.Y[i], err = parseLabel(path, rec, nFeatures, numClasses); err != nil {
			return nil, err
		}
		d.X[i] = x
	}
	return d, nil
}

// DigitsOneVsRest loads the 8x8 handwritten digits dataset from
// dir/digits.csv.gz (dir is the testdata directory; when empty,
// [FindTestdata] is used) and turns it into a binary problem: the label is 1
// when the digit equals positive and 0 otherwise. positive must be in 0..9.
//
// The result has 1797 samples and 64 features (pixel intensities 0..16,
// row-major, named "pixel_<row>_<col>"). The classes are unbalanced: each
// digit has between 174 and 183 samples (digit 0 has 178), so roughly 10% of
// the labels are 1.
//
// Each line of the file holds 64 pixel values followed by the digit.
func DigitsOneVsRest(dir string, positive int) (*Dataset, error) {
	if positive < 0 || positive > 9 {
		return nil, fmt.Errorf("data: DigitsOneVsRest: positive digit must be in 0..9, got %d", positive)
	}
	d, err := Digits(dir)
	if err != nil {
		return nil, err
	}
	d.Name = fmt.Sprintf("digits_%d_vs_rest", positive)
	d.NumClasses = 2
	for i, digit := range d.Y {
		d.Y[i] = 0
		if digit == positive {
			d.Y[i] = 1
		}
	}
	return d, nil
}

// Digits loads the digits dataset of [DigitsOneVsRest] with its ten classes: Y[i] is the digit.
func Digits(dir string) (*Dataset, error) {
	dir, err := resolveDir(dir)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, DigitsFile)
	recs, err := readCommaFile(path)
	if err != nil {
		return nil, err
	}
	if len(recs) == 0 {
		return nil, fmt.Errorf("data: %s: file has no data rows", path)
	}
	const nFeatures = 64
	d := &Dataset{
		Name:         "digits",
		X:            make([][]float64, len(recs)),
		Y:            make([]int, len(recs)),
		NumClasses:   10,
		FeatureNames: make([]string, 0, nFeatures),
	}
	for r := 0; r < 8; r++ {
		for c := 0; c < 8; c++ {
			d.FeatureNames = append(d.FeatureNames, fmt.Sprintf("pixel_%d_%d", r, c))
		}
	}
	for i, rec := range recs {
		if err := checkFields(path, rec, nFeatures+1, "64 pixels and a digit"); err != nil {
			return nil, err
		}
		x := make([]float64, nFeatures)
		for j := range x {
			if x[j], err = parseFloat(path, rec, j); err != nil {
				return nil, err
			}
		}
		if d.Y[i], err = parseLabel(path, rec, nFeatures, 10); err != nil {
			return nil, err
		}
		d.X[i] = x
	}
	return d, nil
}

// DiabetesBinarised loads the diabetes dataset from
// dir/diabetes_data_raw.csv.gz (features) and dir/diabetes_target.csv.gz
// (target); dir is the testdata directory, and when empty [FindTestdata] is
// used.
//
// The result has 442 samples and 10 features (age, sex, bmi, bp, s1..s6) in
// their raw, unscaled units: unlike scikit-learn's load_diabetes default, no
// centring or scaling is applied, so use [Standardize]. The target, a
// measure of disease progression one year after baseline, is binarised
// against the median m of all 442 targets: the label is 1 when target > m
// and 0 otherwise, so a target exactly equal to the median counts as 0. The
// median of an even number of values is the mean of the two middle ones. For
// the shipped file m = 140.5, no target equals it, and the split is exactly
// 221 / 221.
//
// The feature file has 10 whitespace-separated numbers per line; the target
// file has one number per line, in the same row order.
func DiabetesBinarised(dir string) (*Dataset, error) {
	dir, err := resolveDir(dir)
	if err != nil {
		return nil, err
	}
	dataPath := filepath.Join(dir, DiabetesDataFile)
	targetPath := filepath.Join(dir, DiabetesTargetFile)
	dataRecs, err := readWhitespaceFile(dataPath)
	if err != nil {
		return nil, err
	}
	targetRecs, err := readWhitespaceFile(targetPath)
	if err != nil {
		return nil, err
	}
	if len(dataRecs) == 0 {
		return nil, fmt.Errorf("data: %s: file has no data rows", dataPath)
	}
	if len(dataRecs) != len(targetRecs) {
		return nil, fmt.Errorf("data: %s has %d rows but %s has %d; they must match row for row",
			dataPath, len(dataRecs), targetPath, len(targetRecs))
	}
	nFeatures := len(diabetesFeatureNames)
	d := &Dataset{
		Name:         "diabetes_binarised",
		X:            make([][]float64, len(dataRecs)),
		Y:            make([]int, len(dataRecs)),
		NumClasses:   2,
		FeatureNames: slices.Clone(diabetesFeatureNames),
	}
	for i, rec := range dataRecs {
		if err := checkFields(dataPath, rec, nFeatures, "age sex bmi bp s1..s6"); err != nil {
			return nil, err
		}
		x := make([]float64, nFeatures)
		for j := range x {
			if x[j], err = parseFloat(dataPath, rec, j); err != nil {
				return nil, err
			}
		}
		d.X[i] = x
	}
	targets := make([]float64, len(targetRecs))
	for i, rec := range targetRecs {
		if err := checkFields(targetPath, rec, 1, "the disease-progression target"); err != nil {
			return nil, err
		}
		if targets[i], err = parseFloat(targetPath, rec, 0); err != nil {
			return nil, err
		}
	}
	m := median(targets)
	for i, t := range targets {
		if t > m {
			d.Y[i] = 1
		}
	}
	return d, nil
}

// median returns the median of a non-empty slice without modifying it.
func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
