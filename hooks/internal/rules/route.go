package rules

// Route is how a variable's gradient reaches the base optimizer.
type Route string

const (
	RouteTemporal Route = "temporal" // flattened gradient projected on a learned temporal basis
	RouteDirect   Route = "direct"   // matrix subspace, projected gradient computed from ∂y; no ∂W
	RoutePostHoc  Route = "post-hoc" // matrix subspace, full gradient computed then projected
	RouteFull     Route = "full"     // not projected
)
