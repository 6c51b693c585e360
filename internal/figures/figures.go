// Package figures is the data of the examples' pictures of the drift controller: the examples
// write it as JSON, and examples/plot draws it (internal/plots). The examples themselves then do
// not compile a plotting library, which is a sixth of a fresh build of the first command.
package figures

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/gradsub/gradsub/hooks"
)

// Series is one training run seen by a hooks.Monitor: its loss at every step (index = step − 1)
// and the monitor's history.
type Series struct {
	Name    string         `json:"name"`
	Loss    []float64      `json:"loss"`
	History []hooks.Sample `json:"history"`
}

// Controller is a picture of several runs' controllers: loss, residual at the drift checks with
// the refreshes marked, and rank, against the step; Threshold is drawn on the residual panel.
type Controller struct {
	Title     string   `json:"title"`
	Threshold float64  `json:"threshold"`
	Series    []Series `json:"series"`
}

// Write writes the figure's data to path as JSON.
func (c Controller) Write(path string) error {
	data, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

// Read reads a figure written by Write.
func Read(path string) (Controller, error) {
	var c Controller
	data, err := os.ReadFile(path)
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return c, fmt.Errorf("%s is not a controller figure's data: %w", path, err)
	}
	if len(c.Series) == 0 {
		return c, fmt.Errorf("%s holds no series to draw", path)
	}
	return c, nil
}
