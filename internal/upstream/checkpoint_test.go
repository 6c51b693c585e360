package upstream

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/layers"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/model/checkpoint"
	"github.com/gomlx/gomlx/ml/train"
	"github.com/gomlx/gomlx/ml/train/loss"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gradsub/gradsub/internal/backends"
	"github.com/stretchr/testify/require"
)

// linear is a one-layer model for the trainer's pins.
func linear(scope *model.Scope, x *Node) *Node { return layers.DenseWithBias(scope.In("dense"), x, 1) }

// batchOf is the i-th of a fixed sequence of small batches.
func batchOf(i int) train.Batch {
	xs, ys := make([]float32, 8*4), make([]float32, 8)
	for j := range xs {
		xs[j] = float32((i*31+j*7)%13) / 13
	}
	for j := range ys {
		ys[j] = float32((i+j)%5) / 5
	}
	return train.Batch{Inputs: []*tensors.Tensor{tensors.FromFlatDataAndDimensions(xs, 8, 4)}, Labels: []*tensors.Tensor{tensors.FromFlatDataAndDimensions(ys, 8, 1)}}
}

// TestTrainerDoesNotCheckpointItsMicroBatchCount pins a limit of GoMLX v0.28.16's trainer:
// with AccumulateGradients(n) it counts the micro-batches of a window on the host
// (Trainer.accumulateGradientsCurrentStep), not in a variable, so a checkpoint does not hold
// it. A run resumed in the middle of a window restarts the count from zero while the
// accumulated gradients (variables) are restored: its first window sums more micro-batches than
// n and divides by n, for stock optimizers as for the projector. A resume at a window boundary
// is exact. When this test fails, an upgrade checkpoints the count: docs/backends.md's note can
// go.
func TestTrainerDoesNotCheckpointItsMicroBatchCount(t *testing.T) {
	backend, err := backends.New("go")
	require.NoError(t, err)
	const window = 4
	// run trains micro-batches [from, to) on a trainer over store and returns the weights.
	run := func(store *model.Store, from, to int) []float32 {
		trainer := train.NewTrainer(backend, store, linear, loss.MeanSquaredError, optimizer.StochasticGradientDescent().Done(), nil, nil)
		require.NoError(t, trainer.AccumulateGradients(window))
		for i := from; i < to; i++ {
			_, err := trainer.TrainStep(batchOf(i))
			require.NoError(t, err)
		}
		return tensors.MustCopyFlatData[float32](store.GetVariable("/dense/dense/weights").MustValue())
	}
	newStore := func() *model.Store {
		s := model.NewStore()
		s.SetParam(model.ParamInitialSeed, int64(3))
		return s
	}
	const total = 2 * window
	straight := run(newStore(), 0, total)
	for _, stop := range []int{window, window + 2} {
		store := newStore()
		run(store, 0, stop)
		// A checkpoint's round trip: saved, then loaded into a new store and trainer.
		dir := t.TempDir()
		handler, err := checkpoint.Build(store).Dir(dir).Done()
		require.NoError(t, err)
		require.NoError(t, handler.Save())
		resumed := newStore()
		_, err = checkpoint.Build(resumed).Dir(dir).Done()
		require.NoError(t, err)
		got := run(resumed, stop, total)
		if stop%window == 0 {
			require.Equal(t, straight, got, "a resume at a window boundary is exact")
		} else {
			require.NotEqual(t, straight, got, "a resume inside a window is not exact: the micro-batch count is not in the checkpoint (fixed upstream? drop the note in docs/backends.md)")
		}
	}
}

// TestCheckpointSaveWritesInPlace pins a limit of GoMLX v0.28.16's checkpoint.Handler: Save
// writes the newest checkpoint's files in place, so a process killed during a save can leave
// them truncated, and loading a directory picks the newest and fails ("unexpected EOF") without
// trying the earlier ones that Keep(n) retained. hooks.SetAsideUnreadableCheckpoints is the
// project's workaround (hooks.TestKilledSaveLeavesALoadableDirectory kills a saving process). When this test fails, an upgrade loads the newest readable checkpoint (or
// saves atomically): the workaround and its note can go.
func TestCheckpointSaveWritesInPlace(t *testing.T) {
	dir := t.TempDir()
	store := model.NewStore()
	v, err := store.Scope("/w").CreateVariable("weights", tensors.FromShape(shapes.Make(dtypes.Float32, 256, 256)))
	require.NoError(t, err)
	handler, err := checkpoint.Build(store).Dir(dir).Keep(3).Done()
	require.NoError(t, err)
	require.NoError(t, handler.Save())
	require.NoError(t, v.SetValue(tensors.FromShape(shapes.Make(dtypes.Float32, 256, 256))))
	require.NoError(t, handler.Save())
	newest := truncateNewest(t, dir)
	_, err = checkpoint.Build(model.NewStore()).Dir(dir).Done()
	require.Error(t, err, "the truncated newest checkpoint %s fails the load (fixed upstream? drop hooks.SetAsideUnreadableCheckpoints)", newest)
}

// truncateNewest halves the newest checkpoint's data file in dir, as a process killed during its
// save leaves it, and returns its name.
func truncateNewest(t *testing.T, dir string) string {
	t.Helper()
	bins, err := filepath.Glob(filepath.Join(dir, "*.bin"))
	require.NoError(t, err)
	require.NotEmpty(t, bins)
	newest := bins[len(bins)-1] // names sort by their count
	info, err := os.Stat(newest)
	require.NoError(t, err)
	require.NoError(t, os.Truncate(newest, info.Size()/2))
	return strings.TrimSuffix(filepath.Base(newest), ".bin")
}
