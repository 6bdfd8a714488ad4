package main

import (
	"encoding/json"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/engine"
	"github.com/sagaflow/sagaflow/engine/httpapi"
	"github.com/sagaflow/sagaflow/internal/sqlitetest"
)

// apiServer serves the HTTP API of an engine on a fresh SQLite database (no bus: the operator
// commands work through the store alone) and returns its URL and engine.
func apiServer(t *testing.T) (string, *engine.Engine) {
	t.Helper()
	db := sqlitetest.New(t)
	require.NoError(t, engine.Migrate(t.Context(), db))
	reg := definitions.NewRegistry()
	def, err := definitions.New("transfer", 1).
		Step("debit", "bank", "Debit").Compensation("Credit").
		Step("notify", "mail", "Send").
		Build()
	require.NoError(t, err)
	require.NoError(t, reg.Register(def))
	e, err := engine.New(engine.Config{DB: db, Definitions: reg})
	require.NoError(t, err)
	srv := httptest.NewServer(httpapi.NewHandler(e, reg, nil))
	t.Cleanup(srv.Close)
	return srv.URL, e
}

// TestOperatorCommands drives start, list, show and cancel through the command line against a
// real API server, and checks what an operator reads.
func TestOperatorCommands(t *testing.T) {
	api, e := apiServer(t)
	code, stdout, stderr := runCLI(t, "start", "transfer", "--key", "t-42", "--input", `{"amount":5}`, "--api", api)
	require.Equal(t, 0, code, stderr)
	id := strings.TrimSpace(stdout)
	require.Regexp(t, `^[0-9a-f-]{36}$`, id)

	code, stdout, stderr = runCLI(t, "list", "--definition", "transfer", "--api", api)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout, id)
	require.Contains(t, stdout, "t-42")
	require.Regexp(t, `(?m)^`+id+`\s+transfer v1\s+t-42\s+running\s+debit\s`, stdout, "the current step is named")
	code, stdout, stderr = runCLI(t, "list", "--version", "1", "--since", "1h", "--until", time.Now().Add(time.Hour).Format(time.RFC3339), "--api", api)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout, id)
	for _, args := range [][]string{{"--version", "2"}, {"--until", "1h"}} {
		code, stdout, stderr = runCLI(t, append([]string{"list", "--api", api}, args...)...)
		require.Equal(t, 0, code, stderr)
		require.NotContains(t, stdout, id, args)
	}
	code, _, stderr = runCLI(t, "list", "--since", "yesterday", "--api", api)
	require.Equal(t, exitUsage, code)
	require.Contains(t, stderr, `--since "yesterday"`)

	t.Setenv("SAGAFLOW_TRACE_URL", "http://jaeger.example:16686/trace/{trace_id}")
	code, stdout, stderr = runCLI(t, "show", "--key", "t-42", "--api", api)
	require.Equal(t, 0, code, stderr)
	trace := regexp.MustCompile(`(?m)^Trace:\s+([0-9a-f]{32})$`).FindStringSubmatch(stdout)
	require.NotNil(t, trace, "show prints the trace id:\n%s", stdout)
	require.Regexp(t, `(?m)^Trace link:\s+http://jaeger\.example:16686/trace/`+trace[1]+`$`, stdout)
	// The history is a table: one line per entry, its detail compacted onto it.
	require.Regexp(t, `(?m)^1\s+\d\d:\d\d:\d\d\.\d{3}\s+started\s+-\s+-\s+-\s+-\s+by cli:\S+ \{"business_key":"t-42"\}$`, stdout)
	require.Regexp(t, `(?m)^2\s+\S+\s+command\s+debit\s+1\s+forward\s+-\s+\{"command":"Debit","deadline":"[^"]+","message_id":.*$`, stdout)
	for _, want := range []string{"Saga:", id, "Definition:", "transfer v1", "Business key:", "t-42", "Status:", "running",
		"debit", "pending", "started", "command"} {
		require.Contains(t, stdout, want)
	}

	code, stdout, stderr = runCLI(t, "show", id, "--api", api, "-o", "json")
	require.Equal(t, 0, code, stderr)
	var shown struct {
		ID      string            `json:"id"`
		TraceID string            `json:"trace_id"`
		History []json.RawMessage `json:"history"`
	}
	require.NoError(t, json.Unmarshal([]byte(stdout), &shown))
	require.Equal(t, id, shown.ID)
	require.Equal(t, trace[1], shown.TraceID)
	require.NotEmpty(t, shown.History)

	code, stdout, stderr = runCLI(t, "cancel", id, "--reason", "customer called", "--api", api)
	require.Equal(t, 0, code, stderr)
	require.Equal(t, id+": compensating\n", stdout)

	// A cancelled (compensating) saga cannot be retried: the refusal says why, nothing changes.
	code, _, stderr = runCLI(t, "retry", id, "--api", api)
	require.Equal(t, exitUsage, code, "--reason is required")
	require.Contains(t, stderr, "--reason is required")
	patch := t.TempDir() + "/patch.json"
	require.NoError(t, os.WriteFile(patch, []byte(`{"amount":6}`), 0o600))
	code, _, stderr = runCLI(t, "retry", id, "--reason", "amount fixed", "--input-patch", patch, "--api", api)
	require.Equal(t, exitFailure, code)
	require.Contains(t, stderr, "cannot be retried: status compensating")
	code, stdout, stderr = runCLI(t, "show", id, "--api", api, "-o", "json")
	require.Equal(t, 0, code, stderr)
	require.NotContains(t, stdout, "retry_step")

	// The definitions the server runs, with their sagas per status.
	_, err := e.Start(t.Context(), "transfer", "t-43", nil, engine.StartOptions{})
	require.NoError(t, err)
	code, stdout, stderr = runCLI(t, "definitions", "list", "--api", api)
	require.Equal(t, 0, code, stderr)
	require.Regexp(t, `(?m)^DEFINITION\s+VERSION\s+RUNNING\s+COMPENSATING\s+FAILED\s+COMPLETED\s+COMPENSATED\s+REGISTERED\s+HASH$`, stdout)
	require.Regexp(t, `(?m)^transfer\s+1\s+1\s+1\s+0\s+0\s+0\s+-\s+[0-9a-f]{12}$`, stdout)
	code, stdout, stderr = runCLI(t, "definitions", "list", "--api", api, "-o", "json")
	require.Equal(t, 0, code, stderr)
	var versions []engine.DefinitionVersion
	require.NoError(t, json.Unmarshal([]byte(stdout), &versions))
	require.Len(t, versions, 1)
	require.Equal(t, engine.VersionCounts{Running: 1, Compensating: 1}, versions[0].Counts)

	code, _, stderr = runCLI(t, "show", "00000000-0000-7000-8000-000000000000", "--api", api)
	require.Equal(t, exitFailure, code)
	require.Contains(t, stderr, "not found")
}
