package rules

// Cause is why a basis was learned or refreshed, as stored in the "last_svd_cause" state
// variable (svLastLearnCause).
type Cause int32

// Refresh causes.
const (
	CauseNone      Cause = 0
	CauseWarmUp    Cause = 1 // a basis learned during (temporal: at the end of) warm-up
	CauseResidual  Cause = 2 // a drift check found the residual above the threshold
	CauseLoss      Cause = 3 // the smoothed loss stopped falling for LossPatience checks
	CauseCurvature Cause = 4 // the curvature along a step jumped above CurvatureFactor times its smoothed magnitude
	CauseRank      Cause = 5 // a variable's rank changed (the bases are re-learned at the new ranks)
)

// String returns a readable name of the cause.
func (c Cause) String() string {
	switch c {
	case CauseWarmUp:
		return "warm-up"
	case CauseResidual:
		return "residual above threshold"
	case CauseLoss:
		return "smoothed loss stopped falling"
	case CauseCurvature:
		return "curvature jumped"
	case CauseRank:
		return "rank changed"
	}
	return "none"
}
