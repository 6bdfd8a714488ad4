package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDevExampleOrder runs the README's first command in process: the order example on SQLite and
// an embedded JetStream, 200 orders with a quarter of the payments declined. Every saga finishes,
// no invariant breaks, and the JSON report is the last line on stdout.
func TestDevExampleOrder(t *testing.T) {
	code, stdout, stderr := runCLI(t, "dev", "--example", "order", "--orders", "200", "--payment-decline-rate", "0.25",
		"--exit-when-done", "--data", t.TempDir(), "--http", "127.0.0.1:0", "--seed", "42")
	require.Equal(t, 0, code, stderr)
	lines := strings.Split(strings.TrimRight(stdout, "\n"), "\n")
	var report struct {
		Orders      int     `json:"orders"`
		Completed   int     `json:"completed"`
		Compensated int     `json:"compensated"`
		Failed      int     `json:"failed"`
		Stuck       int     `json:"stuck"`
		Errors      int     `json:"errors"`
		Violations  int     `json:"violations"`
		ElapsedMS   float64 `json:"elapsed_ms"`
		SagasPerS   float64 `json:"sagas_per_s"`
		P50MS       float64 `json:"p50_ms"`
		P99MS       float64 `json:"p99_ms"`
	}
	dec := json.NewDecoder(strings.NewReader(lines[len(lines)-1]))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&report), "last line: %s", lines[len(lines)-1])
	t.Logf("report: %+v", report)
	require.Equal(t, 200, report.Orders)
	require.Zero(t, report.Stuck)
	require.Zero(t, report.Errors)
	require.Zero(t, report.Violations)
	require.Zero(t, report.Failed)
	require.Equal(t, 200, report.Completed+report.Compensated)
	require.Positive(t, report.Compensated, "a quarter of the payments are declined")
	require.Positive(t, report.Completed)
}

// TestDevTraceStdout runs the example with --trace stdout: every span is one JSON object on stderr,
// each example service reports its own service.name, every saga is one trace, and the report is
// still the last line of stdout.
func TestDevTraceStdout(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := runCLI(t, "dev", "--example", "order", "--orders", "10", "--shipping-failure-rate", "0.5",
		"--exit-when-done", "--data", t.TempDir(), "--http", "127.0.0.1:0", "--seed", "3", "--trace", "stdout")
	require.Equal(t, 0, code, stderr)
	lines := strings.Split(strings.TrimRight(stdout, "\n"), "\n")
	require.Contains(t, lines[len(lines)-1], `"orders":10`)
	type span struct {
		Name        string
		SpanContext struct{ TraceID, SpanID string }
		Parent      struct{ SpanID string }
		Resource    []struct {
			Key   string
			Value struct{ Value any }
		}
	}
	services := map[string]int{}
	roots := map[string]string{} // trace id -> root span id
	var saga []span
	for _, line := range strings.Split(stderr, "\n") {
		if !strings.HasPrefix(line, `{"Name":`) {
			continue // progress and log lines
		}
		var s span
		require.NoError(t, json.Unmarshal([]byte(line), &s), line)
		for _, kv := range s.Resource {
			if kv.Key == "service.name" {
				services[kv.Value.Value.(string)]++
			}
		}
		if s.Name == "order-fulfilment" {
			roots[s.SpanContext.TraceID] = s.SpanContext.SpanID
		}
		if !strings.HasPrefix(s.Name, "send") {
			saga = append(saga, s)
		}
	}
	require.Len(t, roots, 10, "one root span per saga")
	for _, name := range []string{"sagaflow", "order", "inventory", "payment", "shipping"} {
		require.Positive(t, services[name], "spans of %s", name)
	}
	for _, s := range saga {
		_, ok := roots[s.SpanContext.TraceID]
		require.True(t, ok, "span %s is in a saga's trace", s.Name)
	}
}

func TestDevRejectsBadFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"UnknownExample", []string{"dev", "--example", "bank"}, "the only example is order"},
		{"RateAboveOne", []string{"dev", "--example", "order", "--payment-decline-rate", "1.5"}, "want a rate in 0..1"},
		{"ExitWithoutExample", []string{"dev", "--exit-when-done"}, "--exit-when-done needs --example"},
		{"BadLogLevel", []string{"dev", "--log-level", "loud"}, "--log-level"},
		{"BadTrace", []string{"dev", "--trace", "jaeger"}, `--trace "jaeger": want one of auto, otlp, stdout, none`},
		{"TraceFileWithoutStdout", []string{"dev", "--trace-file", "x.json"}, "--trace-file needs --trace stdout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, _, stderr := runCLI(t, tt.args...)
			require.Equal(t, exitUsage, code)
			require.Contains(t, stderr, tt.want)
			require.Contains(t, stderr, "Usage:")
		})
	}
}
