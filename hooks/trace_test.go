package hooks

import (
	"bufio"
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/gomlx/gomlx/ml/train/optimizer"
	"github.com/stretchr/testify/require"
)

func TestMonitorTrace(t *testing.T) {
	opt := Subspace(optimizer.Adam().LearningRate(0.01).Done()).Rank(3).WarmUp(3).CheckEvery(4).ResidualThreshold(0.2).Done()
	r := newRun(t, opt)
	mon := opt.NewMonitor(r.store)
	var trace bytes.Buffer
	mon.Trace = &trace
	r.stepsObserved(t, mon, 30)

	var records []TraceRecord
	scanner := bufio.NewScanner(&trace)
	for scanner.Scan() {
		var rec TraceRecord
		require.NoError(t, json.Unmarshal(scanner.Bytes(), &rec), scanner.Text())
		records = append(records, rec)
	}
	require.Len(t, records, 30, "one line per observed step")
	events := 0
	for i, rec := range records {
		require.Equal(t, int64(i+1), rec.Step)
		require.Len(t, rec.Variables, 1)
		require.Equal(t, "/hidden/dense/weights", rec.Variables[0].Path)
		require.Positive(t, rec.LossEMA)
		if i > 0 {
			require.GreaterOrEqual(t, rec.Checks, records[i-1].Checks)
			require.GreaterOrEqual(t, rec.BasesLearned, records[i-1].BasesLearned)
			if rec.BasesLearned > records[i-1].BasesLearned {
				require.Contains(t, rec.Event, "basis learned", "step %d learned a basis", rec.Step)
			}
		}
		if rec.Event != "" {
			events++
		}
	}
	report, err := opt.Report(r.store)
	require.NoError(t, err)
	require.Equal(t, int(report.SVDs), events, "every basis learned appears once in the trace")
	require.Equal(t, report.Checks, records[len(records)-1].Checks)
	require.True(t, strings.Contains(records[0].Event, "warm-up"), "matrix mode: fast tracking from the first step: %s", records[0].Event)
}
