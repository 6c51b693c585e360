package main

import (
	"os"
	"strings"
	"testing"

	"github.com/gomlx/compute"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gradsub/gradsub/hooks"
	"github.com/stretchr/testify/require"
)

// TestQuickstart runs the program as a user would (compute.MustNew, -set, a checkpoint
// directory), then again to a later step: the second run resumes from the first's checkpoint.
func TestQuickstart(t *testing.T) {
	t.Setenv("GOMLX_BACKEND", "")
	backend := compute.MustNew()
	dir := t.TempDir()
	store := newStore()
	require.NoError(t, run(backend, store, Options{Settings: "subspace_rank=8", Checkpoint: dir, Steps: 60, Quiet: true}))
	require.Equal(t, int64(60), optimizer.GetGlobalStep(store))

	resumed := newStore()
	require.NoError(t, run(backend, resumed, Options{Settings: "subspace_rank=8", Checkpoint: dir, Steps: 90, Quiet: true}))
	require.Equal(t, int64(90), optimizer.GetGlobalStep(resumed), "resumed at 60, trained to 90")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	require.Contains(t, strings.Join(names, " "), "step-00000090")

	require.ErrorContains(t, run(backend, newStore(), Options{Settings: "subspace_rank=six", Steps: 10, Quiet: true}), "subspace_rank")

	// The one option as the program sets it up: the 256×256 layer projected, the 64×256 one left
	// out (it would not pay at 256 rows a step).
	plain := newStore()
	require.NoError(t, run(backend, plain, Options{Steps: 5, Quiet: true}))
	require.NotNil(t, plain.GetVariable("/"+hooks.StateScope+"/hidden_1/dense/weights_basis"), "the 256×256 layer is projected")
	require.Nil(t, plain.GetVariable("/"+hooks.StateScope+"/hidden_0/dense/weights_basis"), "the 64×256 layer is left out")

	// -set wins over the checkpoint's params on resume: another mode is seen (and refused, with
	// the option named), not silently replaced by the checkpoint's.
	err = run(backend, newStore(), Options{Settings: "subspace_rank=8;subspace_mode=temporal", Checkpoint: dir, Steps: 100, Quiet: true})
	require.ErrorContains(t, err, "its Mode differs (the checkpoint trained this variable in matrix mode, this configuration in Mode(hooks.Temporal))")
}
