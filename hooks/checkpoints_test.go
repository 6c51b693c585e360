package hooks

import (
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/model/checkpoint"
	"github.com/stretchr/testify/require"
)

// savedValues is the content of the i-th save of TestHelperSavesCheckpoints: 4M pseudo-random
// values (16 MiB, which GoMLX gzips for a second or so).
func savedValues(i int) []float32 {
	rng := rand.New(rand.NewPCG(uint64(i), 17))
	values := make([]float32, 1<<22)
	for j := range values {
		values[j] = rng.Float32()
	}
	return values
}

// TestHelperSavesCheckpoints is not a test of its own: TestKilledSaveLeavesALoadableDirectory
// runs it as a child process (GRADSUB_SAVE_DIR set), which saves checkpoints until it is killed.
func TestHelperSavesCheckpoints(t *testing.T) {
	dir := os.Getenv("GRADSUB_SAVE_DIR")
	if dir == "" {
		t.Skip("a child process of TestKilledSaveLeavesALoadableDirectory")
	}
	store := model.NewStore()
	weights, err := store.Scope("/w").CreateVariable("weights", tensors.FromFlatDataAndDimensions(savedValues(0), 1<<22))
	require.NoError(t, err)
	index, err := store.Scope("/w").CreateVariable("index", tensors.FromScalar(int64(0)))
	require.NoError(t, err)
	handler, err := checkpoint.Build(store).Dir(dir).Keep(3).Done()
	require.NoError(t, err)
	for i := 1; ; i++ {
		require.NoError(t, weights.SetValue(tensors.FromFlatDataAndDimensions(savedValues(i), 1<<22)))
		require.NoError(t, index.SetValue(tensors.FromScalar(int64(i))))
		require.NoError(t, handler.Save())
	}
}

// TestKilledSaveLeavesALoadableDirectory: a process killed (SIGKILL) while it saves a checkpoint
// leaves the newest truncated, and GoMLX's loader fails on the directory;
// SetAsideUnreadableCheckpoints renames the broken files aside, and the directory then loads the
// newest whole checkpoint, value for value.
func TestKilledSaveLeavesALoadableDirectory(t *testing.T) {
	if testing.Short() {
		t.Skip("kills a child process during its saves, a few times (about 10 s)")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for attempt := range 12 {
		dir := t.TempDir()
		child := exec.Command(os.Args[0], "-test.run=^TestHelperSavesCheckpoints$")
		child.Env = append(os.Environ(), "GRADSUB_SAVE_DIR="+dir)
		require.NoError(t, child.Start())
		deadline := time.Now().Add(60 * time.Second)
		for { // at least two checkpoints written, then a kill at a random moment
			jsons, _ := filepath.Glob(filepath.Join(dir, "checkpoint-*.json"))
			if len(jsons) >= 2 || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(time.Duration(rng.IntN(600)) * time.Millisecond)
		require.NoError(t, child.Process.Kill())
		_ = child.Wait()
		if _, err := checkpoint.Build(model.NewStore()).Dir(dir).Done(); err == nil {
			t.Logf("attempt %d: the kill fell between two saves", attempt)
			continue
		}
		aside, err := SetAsideUnreadableCheckpoints(dir)
		require.NoError(t, err)
		require.NotEmpty(t, aside)
		t.Logf("attempt %d: set aside %v", attempt, aside)
		store := model.NewStore()
		_, err = checkpoint.Build(store).Dir(dir).Immediate().Done()
		require.NoError(t, err, "the newest readable checkpoint loads")
		i := tensors.ToScalar[int64](store.GetVariable("/w/index").MustValue())
		require.Positive(t, i)
		require.Equal(t, savedValues(int(i)), tensors.MustCopyFlatData[float32](store.GetVariable("/w/weights").MustValue()), "a whole save")
		broken, err := filepath.Glob(filepath.Join(dir, "*.unreadable"))
		require.NoError(t, err)
		require.NotEmpty(t, broken, "set aside, not deleted")
		return
	}
	t.Fatal("no kill fell inside a save in 12 attempts")
}

// TestSetAsideKeepsReadableCheckpoints: a directory whose checkpoints all load, and one that does
// not exist, are left as they are.
func TestSetAsideKeepsReadableCheckpoints(t *testing.T) {
	aside, err := SetAsideUnreadableCheckpoints(filepath.Join(t.TempDir(), "none"))
	require.NoError(t, err)
	require.Empty(t, aside)
	dir := t.TempDir()
	store := model.NewStore()
	_, err = store.Scope("/w").CreateVariable("index", tensors.FromScalar(int64(7)))
	require.NoError(t, err)
	handler, err := checkpoint.Build(store).Dir(dir).Done()
	require.NoError(t, err)
	require.NoError(t, handler.Save())
	aside, err = SetAsideUnreadableCheckpoints(dir)
	require.NoError(t, err)
	require.Empty(t, aside)
	jsons, _ := filepath.Glob(filepath.Join(dir, "checkpoint-*.json"))
	require.Len(t, jsons, 1)
}
