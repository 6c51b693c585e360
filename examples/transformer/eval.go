package main

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/gomlx/compute"
	"github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/train/loss"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gradsub/gradsub/hooks"
	"github.com/gradsub/gradsub/internal/quality"
	"github.com/gradsub/gradsub/transformer"
)

// newReference is GaLore as published on the 12 projections, at -rank, with AdamW's
// hyperparameters: the quality suite's reference (internal/quality), a refresh every 200 steps.
func newReference(o Options) *quality.Reference {
	width := o.Model.Width
	return &quality.Reference{LR: o.LR, Beta1: 0.9, Beta2: 0.999, Epsilon: 1e-7, Scale: 1, Rank: o.Rank, RefreshEvery: 200,
		WeightDecay: o.WeightDecay, Project: regexp.MustCompile(transformer.ProjectionPattern),
		View: func(_ string, dims []int) (int, int) {
			if len(dims) == 3 && dims[0] != width { // attention output: [heads, head_dim, width]
				return dims[0] * dims[1], dims[2]
			}
			n := 1
			for _, d := range dims[1:] {
				n *= d
			}
			return dims[0], n
		}}
}

// optimizerStateBytes sums the variables optimizers keep beside the model: moments, bases,
// snapshots, coefficients (not the scalar counters and learning rates).
func optimizerStateBytes(store *model.Store) int64 {
	var total int64
	for v := range store.IterVariables() {
		if v.Trainable || v.Shape().IsScalar() {
			continue
		}
		p := v.Path()
		if strings.HasPrefix(p, "/"+optimizer.AdamDefaultScope+"/") || strings.HasPrefix(p, "/"+hooks.StateScope+"/") || strings.HasPrefix(p, "/"+quality.ReferenceScope+"/") {
			total += int64(v.Shape().ByteSize())
		}
	}
	return total
}

type batchPair struct{ x, y []int32 }

func evalBatches(data []byte, o Options) ([]batchPair, error) {
	b, err := transformer.NewBatches(data, o.Batch, o.Model.SeqLen, 12345)
	if err != nil {
		return nil, fmt.Errorf("evaluation part: %w", err)
	}
	var out []batchPair
	for range o.EvalBatches {
		x, y := b.Next()
		out = append(out, batchPair{tensors.MustCopyFlatData[int32](x), tensors.MustCopyFlatData[int32](y)})
	}
	return out, nil
}

// evalLoss is the mean next-byte cross-entropy (nats) on the fixed evaluation batches.
//
// It builds its graph at each evaluation: a model.Exec kept across training steps (GoMLX v0.28.16,
// Go backend) returned losses of stale weights (3.68 instead of 3.01 after 200 steps), so the
// evaluation must not outlive the trainer's updates.
func evalLoss(backend compute.Backend, store *model.Store, o Options, set []batchPair) (float64, error) {
	exec, err := model.NewExec(backend, store, func(scope *model.Scope, x, y *graph.Node) *graph.Node {
		logits := o.Model.Logits(scope, x)
		return graph.ReduceAllMean(loss.SparseCategoricalCrossEntropyLogits([]*graph.Node{y}, []*graph.Node{logits}))
	})
	if err != nil {
		return 0, err
	}
	defer exec.Finalize()
	var total float64
	for _, b := range set {
		out, err := exec.Call(tensors.FromFlatDataAndDimensions(b.x, o.Batch, o.Model.SeqLen),
			tensors.FromFlatDataAndDimensions(b.y, o.Batch, o.Model.SeqLen, 1))
		if err != nil {
			return 0, err
		}
		total += float64(out[0].Value().(float32))
	}
	return total / float64(len(set)), nil
}
