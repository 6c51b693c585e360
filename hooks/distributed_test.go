package hooks

import (
	"strings"
	"testing"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/distributed"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/core/tensors/dtensor"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/train"
	"github.com/gomlx/gomlx/ml/train/loss"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gomlx/gomlx/support/exceptions"
	"github.com/stretchr/testify/require"
)

// TestDataParallelAutoSharding: GoMLX's data-parallel step (Trainer.DistributedTrainStep with
// distributed.AutoSharding, the batch sharded over a 1-D "data" mesh) trains a projected model
// as the single-device step does: the direct path's coefficients, the tracking products and the
// complement's draws are the same whatever the batch's sharding (each reduces over the batch, so
// XLA all-reduces r×n coefficients where stock all-reduces m×n gradients). It runs on one device,
// and on all of them where there are more.
func TestDataParallelAutoSharding(t *testing.T) {
	backend := testBackend(t)
	counts := []int{1}
	if n := backend.NumDevices(); n > 1 {
		counts = append(counts, n)
	}
	newOpt := func() *Optimizer {
		return Subspace(optimizer.Adam().LearningRate(0.01).Done()).Rank(3).WarmUp(2).CheckEvery(3).Done()
	}
	newTrainer := func(opt *Optimizer) *train.Trainer {
		store := model.NewStore()
		store.SetParam(model.ParamInitialSeed, int64(7))
		return train.NewTrainer(backend, store, mlp, loss.MeanSquaredError, opt, nil, nil)
	}
	const steps = 6
	single := newTrainer(newOpt())
	var want []float32
	for range steps {
		x, y := toyProblem(64, 12)
		metrics, err := single.TrainStep(train.Batch{Inputs: []*tensors.Tensor{x}, Labels: []*tensors.Tensor{y}})
		require.NoError(t, err)
		want = append(want, metrics[0].Value().(float32))
	}
	for _, devices := range counts {
		mesh, err := distributed.NewDeviceMesh([]int{devices}, []string{"data"})
		require.NoError(t, err)
		spec, err := distributed.NewShardingSpec(mesh, distributed.AxisSpec{"data"})
		require.NoError(t, err)
		assignment := make([]compute.DeviceNum, devices)
		for i := range assignment {
			assignment[i] = compute.DeviceNum(i)
		}
		opt := newOpt()
		trainer := newTrainer(opt)
		for i := range steps {
			x, y := toyProblem(64, 12)
			dx, err := dtensor.ShardTensor(spec, x)
			require.NoError(t, err)
			dy, err := dtensor.ShardTensor(spec, y)
			require.NoError(t, err)
			var metrics []*tensors.Tensor
			// GoMLX's Go backend panics here (DistributedAutoSharding: op not implemented).
			err = exceptions.TryCatch[error](func() {
				metrics, err = trainer.DistributedTrainStep(distributed.AutoSharding, assignment, train.DistributedBatch{Inputs: []*dtensor.Tensor{dx}, Labels: []*dtensor.Tensor{dy}})
				if err != nil {
					panic(err)
				}
			})
			if err != nil && i == 0 && strings.Contains(err.Error(), "not implemented") {
				t.Skipf("needs a backend with AutoSharding (XLA: GOMLX_BACKEND=xla:cpu or xla:cuda); %s says: %v", backend.Name(), err)
			}
			require.NoError(t, err, "%d devices, step %d", devices, i+1)
			require.InEpsilon(t, want[i], metrics[0].Value().(float32), 1e-4, "%d devices, step %d", devices, i+1)
		}
		require.Equal(t, RouteDirect, opt.Plan()[0].Route, opt.PlanString())
	}
}
