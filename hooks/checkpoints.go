package hooks

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/model/checkpoint"
)

// SetAsideUnreadableCheckpoints makes a checkpoint directory load again after a process was
// killed while saving. GoMLX's checkpoint.Handler.Save (v0.28.16) writes the newest checkpoint's
// files in place, so a kill during a save can leave them truncated, and checkpoint.Build(store).
// Dir(dir).Done() then loads that one and fails ("unexpected EOF") without trying the earlier
// ones Keep(n) retained (internal/upstream pins it). Call this before building the handler: from
// the newest checkpoint back, each that GoMLX cannot load is renamed with the suffix
// ".unreadable" (nothing is deleted), until one loads; it returns the names set aside.
//
//	aside, err := hooks.SetAsideUnreadableCheckpoints(dir)
//	ckpt, err := checkpoint.Build(store).Dir(dir).Keep(2).Done() // the newest readable one
//
// A directory that does not exist yet is no error (nothing to set aside).
func SetAsideUnreadableCheckpoints(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	var names []string // base names, as GoMLX lists them: "checkpoint-…" with a .json
	for _, e := range entries {
		if name := e.Name(); !e.IsDir() && strings.HasPrefix(name, "checkpoint-") && strings.HasSuffix(name, checkpoint.JsonNameSuffix) {
			names = append(names, strings.TrimSuffix(name, checkpoint.JsonNameSuffix))
		}
	}
	sort.Strings(names)
	var aside []string
	for i := len(names) - 1; i >= 0; i-- {
		ok, err := checkpointLoads(dir, names[i])
		if err != nil {
			return aside, err
		}
		if ok {
			break
		}
		for _, suffix := range []string{checkpoint.JsonNameSuffix, checkpoint.BinDataSuffix} {
			path := filepath.Join(dir, names[i]+suffix)
			if err := os.Rename(path, path+".unreadable"); err != nil && !os.IsNotExist(err) {
				return aside, fmt.Errorf("hooks: setting aside the unreadable checkpoint %s: %w", names[i], err)
			}
		}
		aside = append(aside, names[i])
	}
	return aside, nil
}

// checkpointLoads says whether GoMLX loads the checkpoint name of dir, alone: its files are
// linked (or copied) into a probe directory inside dir, which GoMLX's listing skips.
func checkpointLoads(dir, name string) (bool, error) {
	probe, err := os.MkdirTemp(dir, ".probe-")
	if err != nil {
		return false, err
	}
	defer os.RemoveAll(probe)
	for _, suffix := range []string{checkpoint.JsonNameSuffix, checkpoint.BinDataSuffix} {
		from, to := filepath.Join(dir, name+suffix), filepath.Join(probe, name+suffix)
		if _, err := os.Stat(from); os.IsNotExist(err) {
			return false, nil // a save killed before it wrote this file
		}
		if err := os.Link(from, to); err != nil {
			if err := copyFile(from, to); err != nil {
				return false, err
			}
		}
	}
	_, err = checkpoint.Build(model.NewStore()).Dir(probe).Done()
	return err == nil, nil
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
