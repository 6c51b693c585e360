package transformer

import (
	"strings"
	"testing"

	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/train"
	"github.com/gomlx/gomlx/ml/train/loss"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gradsub/gradsub/hooks"
	"github.com/gradsub/gradsub/internal/backends"
	"github.com/stretchr/testify/require"
)

func smallCorpus(t *testing.T) *Corpus {
	t.Helper()
	c, err := LoadCorpus([]string{GoSource(GoRoot()) + "/strings"}, []string{".go"}, 400_000)
	require.NoError(t, err)
	require.Positive(t, len(c.Eval), "the split must leave eval files")
	return c
}

func newTrainer(t testing.TB, cfg Config, opt interface {
	UpdateGraph(*model.Scope, *Graph, *Node)
	Clear(*model.Scope) error
}) *train.Trainer {
	backend, err := backends.New(backends.Config("")) // $GOMLX_BACKEND, or the Go backend
	require.NoError(t, err)
	store := model.NewStore()
	store.SetParam(model.ParamInitialSeed, int64(1))
	return train.NewTrainer(backend, store, cfg.Logits, loss.SparseCategoricalCrossEntropyLogits, opt, nil, nil)
}

func TestModelLearnsBelowUnigramEntropy(t *testing.T) {
	if testing.Short() {
		t.Skip("trains a small transformer for a few hundred steps; skipped with -short")
	}
	corpus := smallCorpus(t)
	cfg := Config{Vocab: 256, Width: 64, Depth: 1, Heads: 2, MLP: 128, SeqLen: 32}
	require.NoError(t, cfg.Validate())
	opt := hooks.Subspace(optimizer.Adam().LearningRate(3e-3).Done()).Rank(8).Matching(ProjectionPattern).Done()
	trainer := newTrainer(t, cfg, opt)
	batches, err := NewBatches(corpus.Train, 16, cfg.SeqLen, 1)
	require.NoError(t, err)
	const steps, tail = 300, 20
	var last float64 // mean batch loss over the last steps
	for i := range steps {
		x, y := batches.Next()
		metrics, err := trainer.TrainStep(train.Batch{Inputs: []*tensors.Tensor{x}, Labels: []*tensors.Tensor{y}})
		require.NoError(t, err)
		if i >= steps-tail {
			last += float64(metrics[0].Value().(float32)) / tail
		}
	}
	unigram := UnigramEntropy(corpus.Train)
	t.Logf("unigram entropy %.3f nats/byte; training loss over steps 281-300: %.3f", unigram, last)
	require.Less(t, last, 0.8*unigram, "the model must use context: loss well below the unigram entropy")
}

func TestEveryProjectionTakesTheDirectPath(t *testing.T) {
	cfg := Config{Vocab: 256, Width: 32, Depth: 2, Heads: 2, MLP: 64, SeqLen: 16}
	opt := hooks.Subspace(optimizer.Adam().Done()).Rank(4).Matching(ProjectionPattern).Done()
	trainer := newTrainer(t, cfg, opt)
	batches, err := NewBatches(smallCorpus(t).Train, 2, cfg.SeqLen, 1)
	require.NoError(t, err)
	x, y := batches.Next()
	_, err = trainer.TrainStep(train.Batch{Inputs: []*tensors.Tensor{x}, Labels: []*tensors.Tensor{y}})
	require.NoError(t, err)
	direct := 0
	for _, e := range opt.Plan() {
		if strings.Contains(e.Variable, "/block_") && strings.HasSuffix(e.Variable, "/weights") && !strings.Contains(e.Variable, "norm") {
			require.Equal(t, hooks.RouteDirect, e.Route, "%s: %s\n%s", e.Variable, e.Why, opt.PlanString())
			direct++
		}
	}
	require.Equal(t, cfg.Depth*6, direct, "query, key, value, output, up and down in every block\n%s", opt.PlanString())
	// No control flow: on an accelerator each gate is a host round trip on every step.
	g, _ := opt.StepGraph()
	for _, n := range g.Nodes() {
		switch n.Type() {
		case NodeTypeIf, NodeTypeWhile, NodeTypeCall:
			t.Fatalf("control flow in the step graph of %d projections: %s", direct, n)
		}
	}
}

func TestCorpusErrorsAndEntropy(t *testing.T) {
	_, err := LoadCorpus([]string{"/no/such/corpus"}, nil, 0)
	require.ErrorContains(t, err, "/no/such/corpus")
	_, err = NewBatches([]byte("tiny"), 1, 16, 1)
	require.ErrorContains(t, err, "shorter than one sequence")
	require.InDelta(t, 0, UnigramEntropy([]byte("aaaa")), 1e-12)
	require.InDelta(t, 0.6931471805599453, UnigramEntropy([]byte("abab")), 1e-12)
	require.ErrorContains(t, Config{Vocab: 256, Width: 30, Depth: 1, Heads: 4, MLP: 8, SeqLen: 8}.Validate(), "not a multiple of 4 heads")
}
