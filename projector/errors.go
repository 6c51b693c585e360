package projector

import "github.com/gomlx/gomlx/support/exceptions"

// panicf reports a graph-building error the GoMLX way (an exception, recovered by Exec into an
// error), prefixed with the package name so the user knows where it came from.
func panicf(format string, args ...any) {
	exceptions.Panicf("projector."+format, args...)
}
