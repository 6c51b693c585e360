package transformer

import (
	"testing"

	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/train"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gradsub/gradsub/hooks"
)

// BenchmarkTransformerStep times one AdamW training step of the default transformer (width 256,
// 2 blocks, sequence 128, batch 8): stock, and with every attention and feed-forward projection in
// a rank-8 matrix subspace. Compare in one run with benchstat:
//
//	GOTOOLCHAIN=auto GOEXPERIMENT=simd go test ./transformer -run '^$' -bench TransformerStep -count 6 > steps.txt
//	benchstat -col /variant steps.txt
//
// The backend is $GOMLX_BACKEND (default: the Go backend). examples/transformer reports the same
// ratio after training, with losses, FLOPs and state.
func BenchmarkTransformerStep(b *testing.B) {
	corpus, err := LoadCorpus([]string{GoSource(GoRoot()) + "/strings"}, []string{".go"}, 400_000)
	if err != nil {
		b.Fatal(err)
	}
	cfg := DefaultConfig()
	for _, variant := range []string{"stock", "matrix"} {
		b.Run("variant="+variant, func(b *testing.B) {
			adamw := optimizer.Adam().LearningRate(2e-3).WeightDecay(0.01).Done()
			opt := hooks.Subspace(adamw).Enabled(variant == "matrix").Rank(8).WarmUp(4).
				Matching(ProjectionPattern).WeightDecay(0.01).Done()
			trainer := newTrainer(b, cfg, opt) // the backend is $GOMLX_BACKEND, or the Go backend
			batches, err := NewBatches(corpus.Train, 8, cfg.SeqLen, 1)
			if err != nil {
				b.Fatal(err)
			}
			step := func() {
				x, y := batches.Next()
				metrics, err := trainer.TrainStep(train.Batch{Inputs: []*tensors.Tensor{x}, Labels: []*tensors.Tensor{y}})
				if err != nil {
					b.Fatal(err)
				}
				_ = metrics[0].Value() // waits for the step on asynchronous backends
			}
			for range 8 { // compile, and leave the warm-up phase
				step()
			}
			b.ResetTimer()
			for b.Loop() {
				step()
			}
			b.ReportMetric(float64(8*cfg.SeqLen)*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}
