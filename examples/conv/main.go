// Command conv compares conv nets trained with stock Adam and with the projector, whose kernels
// are projected as [kh·kw·in, out] matrices on the direct path (their full gradient is never
// built). Accuracy: the quality suite's conv net on the digits images (two 3×3 convolutions of
// 16 and 32 channels and a dense head of 64), kernels and dense matrix at rank 8, several seeds.
// Cost: a CIFAR-shaped conv net on synthetic data (32×32×3 images, batch 64; 3×3 convolutions
// of 32, 64 (stride 2) and 64 channels, global average pooling, a dense head): step time in
// interleaved blocks, and the kernels' gradient FLOPs, counted from the compiled steps, beside
// the analytic bound.
//
//	GOTOOLCHAIN=auto GOEXPERIMENT=simd go run ./examples/conv
//	GOTOOLCHAIN=auto GOEXPERIMENT=simd go run ./examples/conv -parts cost -blocks 6 -steps 10
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"github.com/gomlx/compute"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/layers"
	"github.com/gomlx/gomlx/ml/layers/activation"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/train"
	"github.com/gomlx/gomlx/ml/train/loss"
	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/gradsub/gradsub/hooks"
	"github.com/gradsub/gradsub/internal/backends"
	"github.com/gradsub/gradsub/internal/quality"
)

func main() {
	parts := flag.String("parts", "accuracy,cost", "what to run: accuracy (digits conv net), cost (CIFAR-shaped timing and FLOPs)")
	seeds := flag.Int("seeds", 3, "accuracy: seeds per variant")
	rank := flag.Int("rank", 8, "rank of the projected kernels and matrices")
	blocks := flag.Int("blocks", 4, "cost: interleaved timing blocks per variant")
	blockSteps := flag.Int("steps", 5, "cost: steps per timing block")
	backendFlag := flag.String("backend", "", "GoMLX backend (default: $GOMLX_BACKEND, else the Go backend)")
	flag.Parse()
	backend, err := backends.New(backends.Config(*backendFlag))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("backend: %s\nmachine: %s\n", backend.Description(), backends.Machine())
	if strings.Contains(*parts, "accuracy") {
		if err := accuracy(backend, *seeds, *rank); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	if strings.Contains(*parts, "cost") {
		if err := cost(backend, *rank, *blocks, *blockSteps); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}

// accuracy trains the quality suite's conv net with stock Adam and with the projector (default
// options but the rank) on the same initialisation and batches per seed.
func accuracy(backend compute.Backend, seeds, rank int) error {
	task := quality.ConvNet()
	task.Rank = rank
	var results []quality.Result
	for _, variant := range []string{quality.Stock, quality.Matrix} {
		for seed := range int64(seeds) {
			r, err := quality.Run(backend, task, variant, seed+1, quality.Options{})
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "digits conv net, %s, seed %d: accuracy %.3f, eval loss %.3f\n", variant, r.Seed, r.Accuracy, r.EvalLoss)
			results = append(results, r)
		}
	}
	fmt.Printf("\nDigits conv net (%d steps, batch 32, Adam 3e-3; kernels [9×16], [144×32] and the dense [2048×64] at rank %d), %d seeds:\n\n", task.Steps, rank, seeds)
	fmt.Println("| variant | accuracy | eval loss |")
	fmt.Println("|---|---|---|")
	for _, s := range quality.Summarize(results) {
		fmt.Printf("| %s | %.3f ± %.3f | %.3f ± %.3f |\n", s.Variant, s.Acc, s.AccStd, s.Loss, s.LossStd)
	}
	return nil
}

// CIFAR-shaped cost model.
const (
	cifarBatch, cifarSide, cifarChannels, cifarClasses = 64, 32, 3, 10
)

var cifarKernels = []struct {
	out, stride int
}{{32, 1}, {64, 2}, {64, 1}}

func cifarNet(scope *model.Scope, x *Node) *Node {
	h := x
	for i, k := range cifarKernels {
		h = activation.Relu(layers.Convolution(scope.In("conv_%d", i), h).Filters(k.out).KernelSize(3).Strides(k.stride).PadSame().Done())
	}
	h = ReduceMean(h, 1, 2) // global average pooling
	return layers.DenseWithBias(scope.In("head"), h, cifarClasses)
}

func cifarBatchOf(rng *rand.Rand) train.Batch {
	x := make([]float32, cifarBatch*cifarSide*cifarSide*cifarChannels)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	y := make([]int32, cifarBatch)
	for i := range y {
		y[i] = int32(rng.IntN(cifarClasses))
	}
	return train.Batch{Inputs: []*tensors.Tensor{tensors.FromFlatDataAndDimensions(x, cifarBatch, cifarSide, cifarSide, cifarChannels)},
		Labels: []*tensors.Tensor{tensors.FromFlatDataAndDimensions(y, cifarBatch, 1)}}
}

type variant struct {
	name    string
	opt     *hooks.Optimizer
	trainer *train.Trainer
	time    time.Duration
}

// kernelBound is the analytic ratio of a kernel's gradient FLOPs, direct over full, for its
// [m, out] matrix at rank r with the default complement of s directions, tracking left out:
// (r+s)·(m + out)/(m·out) on either side (output side: ∂y·[Q|Ω], then the (r+s)-channel kernel
// gradient; patch side: conv(x, [Q|Ω]), then its product with ∂y).
func kernelBound(m, out, r int) float64 {
	s := hooks.ComplementOf(min(m, out), r) // the complement's directions ride in the same products
	return float64((r+s)*(m+out)) / float64(m*out)
}

func cost(backend compute.Backend, rank, blocks, blockSteps int) error {
	mk := func(name string, projected bool) *variant {
		store := model.NewStore()
		store.SetParam(model.ParamInitialSeed, int64(1))
		opt := hooks.Subspace(optimizer.Adam().Done()).Enabled(projected).Rank(rank).Done()
		return &variant{name: name, opt: opt, trainer: train.NewTrainer(backend, store, cifarNet, loss.SparseCategoricalCrossEntropyLogits, opt, nil, nil)}
	}
	stock, sub := mk("stock", false), mk("subspace", true)
	rng := rand.New(rand.NewPCG(1, 2))
	step := func(v *variant, n int) error {
		for range n {
			b := cifarBatchOf(rng) // built outside the timed region
			start := time.Now()
			if _, err := v.trainer.TrainStep(b); err != nil {
				return err
			}
			v.time += time.Since(start)
		}
		return nil
	}
	for _, v := range []*variant{stock, sub} { // compile and warm up, past the projector's warm-up
		if err := step(v, hooks.DefaultWarmUp+3); err != nil {
			return err
		}
		v.time = 0
	}
	fmt.Fprintf(os.Stderr, "%s\n", strings.TrimSpace(sub.opt.PlanString()))
	for i := range blocks {
		order := []*variant{stock, sub}
		if i%2 == 1 {
			order = []*variant{sub, stock}
		}
		for _, v := range order {
			if err := step(v, blockSteps); err != nil {
				return err
			}
		}
		n := float64((i + 1) * blockSteps)
		fmt.Fprintf(os.Stderr, "block %d of %d: stock %.1f ms/step, subspace %.1f ms/step\n", i+1, blocks,
			float64(stock.time.Microseconds())/1e3/n, float64(sub.time.Microseconds())/1e3/n)
	}
	return printCost(backend, rank, blocks, blockSteps, stock, sub)
}

// printCost prints the kernels' gradient FLOPs, the step's FLOPs and time of stock and sub
// against the analytic bound of the direct path at rank.
func printCost(backend compute.Backend, rank, blocks, blockSteps int, stock, sub *variant) error {
	fs, err := stock.opt.StepFLOPs()
	if err != nil {
		return err
	}
	fp, err := sub.opt.StepFLOPs()
	if err != nil {
		return err
	}
	kernelGrad, err := hooks.KernelGradientFLOPs(stock.opt)
	if err != nil {
		return err
	}
	// Everything else in the gradient (∂x, the head) is the same in both steps: the projected
	// kernels' gradient work is the subspace step's gradient FLOPs less that.
	projected := fp.Gradient - (fs.Gradient - kernelGrad)
	var boundNum, boundDen float64
	in := cifarChannels
	side := cifarSide
	for _, k := range cifarKernels {
		side = (side + k.stride - 1) / k.stride
		m := 9 * in
		full := float64(2 * cifarBatch * side * side * m * k.out)
		boundNum += full * kernelBound(m, k.out, rank)
		boundDen += full
		in = k.out
	}
	n := float64(blocks * blockSteps)
	stockMs, subMs := float64(stock.time.Microseconds())/1e3/n, float64(sub.time.Microseconds())/1e3/n
	stepBound := float64(fs.Step()-kernelGrad) + boundNum
	fmt.Printf("\nCIFAR-shaped conv net (batch %d, 32×32×3; 3×3 convolutions of 32, 64 (stride 2), 64 channels at rank %d), %s:\n\n", cifarBatch, rank, backend.Name())
	fmt.Println("| | stock | subspace | ratio | analytic bound |")
	fmt.Println("|---|---|---|---|---|")
	fmt.Printf("| kernels' gradient FLOPs/step | %s | %s | %.3f | %.3f |\n", hooks.HumanFLOPs(kernelGrad), hooks.HumanFLOPs(projected), float64(projected)/float64(kernelGrad), boundNum/boundDen)
	fmt.Printf("| step FLOPs | %s | %s | %.3f | %.3f |\n", hooks.HumanFLOPs(fs.Step()), hooks.HumanFLOPs(fp.Step()), float64(fp.Step())/float64(fs.Step()), stepBound/float64(fs.Step()))
	fmt.Printf("| ms/step (interleaved, %d×%d steps) | %.1f | %.1f | **%.3f** | |\n", blocks, blockSteps, stockMs, subMs, subMs/stockMs)
	fmt.Println("\nThe bound: per kernel [m×out] (m = 3·3·in), the direct coefficient of r directions and s complement")
	fmt.Println("directions (2r, at most the side less r) costs (r+s)·(m+out)/(m·out) of the full kernel gradient on")
	fmt.Println("either side; tracking (from a quarter of the examples) comes on top.")
	return nil
}
