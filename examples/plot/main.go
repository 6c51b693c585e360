// Command plot draws the pictures whose data the examples write (internal/figures): the drift
// controller's (controller-*.json) and the frontier of quality against step time
// (frontier*.json, from examples/transformer and examples/quality -ranks): a PNG beside each
// file, or beside each such file in a directory given.
//
//	go run ./examples/mlp            # writes mlp-report/controller-*.json
//	go run ./examples/plot mlp-report
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/gradsub/gradsub/internal/figures"
	"github.com/gradsub/gradsub/internal/plots"
)

func main() {
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: plot FILE.json|DIR...\ndraws each controller figure's data (from the examples' -out directory) as a PNG beside it\n")
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "plot:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	var files []string
	for _, arg := range args {
		info, err := os.Stat(arg)
		if err != nil {
			return err
		}
		if !info.IsDir() {
			files = append(files, arg)
			continue
		}
		var found []string
		for _, pattern := range []string{"controller*.json", "frontier*.json"} {
			matches, err := filepath.Glob(filepath.Join(arg, pattern))
			if err != nil {
				return err
			}
			found = append(found, matches...)
		}
		if len(found) == 0 {
			return fmt.Errorf("%s holds no controller*.json or frontier*.json: run an example with -out %s first", arg, arg)
		}
		files = append(files, found...)
	}
	for _, file := range files {
		png := strings.TrimSuffix(file, filepath.Ext(file)) + ".png"
		if strings.HasPrefix(filepath.Base(file), "frontier") {
			fig, err := figures.ReadFrontier(file)
			if err != nil {
				return err
			}
			if err := plots.Frontier(png, fig); err != nil {
				return fmt.Errorf("drawing %s: %w", file, err)
			}
		} else {
			fig, err := figures.Read(file)
			if err != nil {
				return err
			}
			if err := plots.Controller(png, fig); err != nil {
				return fmt.Errorf("drawing %s: %w", file, err)
			}
		}
		fmt.Println("wrote", png)
	}
	return nil
}
