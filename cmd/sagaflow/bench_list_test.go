package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestBenchList runs "bench list" on a tiny load: both requests are measured, on every saga seeded.
func TestBenchList(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := runCLI(t, "bench", "list", "--sagas", "30", "--input-kb", "8", "--runs", "2")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "seeded 30 sagas of 8 KiB")
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	require.Len(t, lines, 2, stdout)
	var results []listBenchResult
	for _, l := range lines {
		var r listBenchResult
		require.NoError(t, json.Unmarshal([]byte(l), &r), l)
		require.Equal(t, 30, r.Sagas)
		require.Equal(t, 2, r.Runs)
		require.Positive(t, r.MedianMS)
		require.GreaterOrEqual(t, r.MaxMS, r.MedianMS)
		require.Positive(t, r.Answer)
		results = append(results, r)
	}
	require.Equal(t, "sagaflow list --limit 100", results[0].Request)
	require.Equal(t, "GET /v1/sagas?limit=1000", results[1].Request)
}
