package main

import (
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/engine"
	"github.com/sagaflow/sagaflow/engine/httpapi"
	"github.com/sagaflow/sagaflow/internal/sqlitetest"
)

// TestNeedsAttention checks that list --needs-attention shows only the operator's queue and that
// list and show say why a saga is in it. The flag is set in the database as the engine sets it
// after a late effect (engine.TestForwardRecovery covers how it gets there).
func TestNeedsAttention(t *testing.T) {
	db := sqlitetest.New(t)
	require.NoError(t, engine.Migrate(t.Context(), db))
	reg := definitions.NewRegistry()
	def, err := definitions.New("transfer", 1).Step("debit", "bank", "Debit").Compensation("Credit").Build()
	require.NoError(t, err)
	require.NoError(t, reg.Register(def))
	e, err := engine.New(engine.Config{DB: db, Definitions: reg})
	require.NoError(t, err)
	srv := httptest.NewServer(httpapi.NewHandler(e, reg, nil))
	t.Cleanup(srv.Close)

	start := func(key string) string {
		code, stdout, stderr := runCLI(t, "start", "transfer", "--key", key, "--api", srv.URL)
		require.Equal(t, 0, code, stderr)
		return strings.TrimSpace(stdout)
	}
	calm, flagged := start("t-1"), start("t-2")
	const why = `late effect of step "debit" (failed) on a compensated saga: reconcile it by hand`
	_, err = db.ExecContext(t.Context(), `UPDATE sagaflow_instances SET attention = ? WHERE id = ?`, why, flagged)
	require.NoError(t, err)

	code, stdout, stderr := runCLI(t, "list", "--needs-attention", "--api", srv.URL)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout, flagged)
	require.NotContains(t, stdout, calm)
	require.Contains(t, stdout, "running (needs attention)")

	code, stdout, stderr = runCLI(t, "list", "--api", srv.URL)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout, calm)
	require.Contains(t, stdout, flagged)

	code, stdout, stderr = runCLI(t, "show", flagged, "--api", srv.URL)
	require.Equal(t, 0, code, stderr)
	require.Regexp(t, `(?m)^Needs attention:\s+`+regexp.QuoteMeta(why)+`$`, stdout)
	code, stdout, stderr = runCLI(t, "show", calm, "--api", srv.URL)
	require.Equal(t, 0, code, stderr)
	require.NotContains(t, stdout, "Needs attention")

	code, stdout, stderr = runCLI(t, "resolve", flagged, "--reason", "recalled by hand", "--api", srv.URL)
	require.Equal(t, 0, code, stderr)
	require.Equal(t, flagged+": running\n", stdout)
	code, stdout, stderr = runCLI(t, "list", "--needs-attention", "--api", srv.URL)
	require.Equal(t, 0, code, stderr)
	require.NotContains(t, stdout, flagged)
	code, _, stderr = runCLI(t, "resolve", flagged, "--api", srv.URL)
	require.Equal(t, exitFailure, code)
	require.Contains(t, stderr, "does not need attention")
}
