package hooks

import (
	"iter"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/gomlx/compute"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/dataset"
	"github.com/gomlx/gomlx/ml/layers"
	"github.com/gomlx/gomlx/ml/layers/activation"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/train"
	"github.com/gomlx/gomlx/ml/train/loss"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gradsub/gradsub/internal/backends"
)

// BenchmarkMNISTStep times one training step of a 784-256-10 MLP, batch 256, Adam: stock, and with
// the first layer in a rank-8 matrix subspace. With $GOMLX_BACKEND unset it runs the Go backend
// twice: with the examples' one graph executor (executor=sequential) and with GoMLX's default,
// what a plain compute.MustNew() program gets (executor=default), which overlaps independent ops.
// Compare with benchstat, same run:
//
//	GOTOOLCHAIN=auto GOEXPERIMENT=simd go test ./hooks -run '^$' -bench MNISTStep -count 6 > steps.txt
//	benchstat -row /executor -col /variant steps.txt
//
// examples/bench reports the same ratio, the FLOPs and the optimizer state in one table.
func BenchmarkMNISTStep(b *testing.B) {
	type executor struct {
		name   string
		config string
		create func(string) (compute.Backend, error)
	}
	executors := []executor{
		{"sequential", "go", backends.New},       // the examples' backend
		{"default", "go", compute.NewWithConfig}, // GoMLX's own: compute.MustNew()'s Go backend
	}
	if config := os.Getenv(backends.EnvVar); config != "" {
		executors = []executor{{"env", config, backends.New}}
	}
	for _, e := range executors {
		backend, err := e.create(e.config)
		if err != nil {
			b.Fatal(err)
		}
		b.Run("executor="+e.name, func(b *testing.B) { benchmarkMNISTStep(b, backend) })
	}
}

func benchmarkMNISTStep(b *testing.B, backend compute.Backend) {
	model2 := func(scope *model.Scope, x *Node) *Node {
		h := activation.Apply(activation.TypeRelu, layers.DenseWithBias(scope.In("layer_0"), x, 256))
		return layers.DenseWithBias(scope.In("logits"), h, 10)
	}
	for _, variant := range []string{"stock", "matrix"} {
		b.Run("variant="+variant, func(b *testing.B) {
			store := model.NewStore()
			opt := Subspace(optimizer.Adam().Done()).Enabled(variant == "matrix").Rank(8).
				Variables("/layer_0/dense/weights").Done()
			trainer := train.NewTrainer(backend, store, model2, loss.SparseCategoricalCrossEntropyLogits, opt, nil, nil)
			// A few random batches, made once and kept on the device: each step's batch is gathered
			// there (dataset.InMemory), as GoMLX programs feed training. A batch built from Go
			// slices every step would cost the Go backend a fresh buffer a step
			// (docs/backends.md); drawing 200,000 normals a step would cost more than the step.
			rng := rand.New(rand.NewPCG(1, 2))
			const batches = 4
			xs, ys := make([]float32, batches*256*784), make([]int32, batches*256)
			for i := range xs {
				xs[i] = float32(rng.NormFloat64())
			}
			for i := range ys {
				ys[i] = int32(rng.IntN(10))
			}
			ds, err := dataset.InMemoryFromData(backend, "mnist-shaped",
				[]any{tensors.FromFlatDataAndDimensions(xs, batches*256, 784)},
				[]any{tensors.FromFlatDataAndDimensions(ys, batches*256, 1)})
			if err != nil {
				b.Fatal(err)
			}
			next, stop := iter.Pull2(ds.BatchSize(256, true).Infinite(true).Iter())
			defer stop()
			batch := func() train.Batch {
				batch, err, ok := next()
				if err != nil || !ok {
					b.Fatalf("the device feed ended: %v", err)
				}
				return batch
			}
			for range 15 { // compile, and leave the warm-up phase
				if _, err := trainer.TrainStep(batch()); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for b.Loop() {
				b.StopTimer()
				in := batch()
				b.StartTimer()
				metrics, err := trainer.TrainStep(in)
				if err != nil {
					b.Fatal(err)
				}
				_ = metrics[0].Value() // waits for the step on asynchronous backends
			}
		})
	}
}
