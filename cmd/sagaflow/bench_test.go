package main

import (
	"encoding/json"
	"math"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/internal/pgschema"
)

// TestBenchSaga runs "bench saga" on a tiny load in both modes: every figure of every cell is there
// and plausible, and the bench never holds more PostgreSQL connections than --max-db-conns (counted
// in pg_stat_activity, from a connection of the test's own, while it runs).
func TestBenchSaga(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	base, err := pgschema.Find(ctx, "")
	require.NoError(t, err)
	app := "bench-test-" + randomHex(4)
	const maxConns = 24

	watch, err := sqlx.Open("postgres", base)
	require.NoError(t, err)
	defer watch.Close()
	watch.SetMaxOpenConns(1)
	var peak atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			var n int64
			if err := watch.GetContext(ctx, &n, `SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE $1`, app+"-%"); err == nil && n > peak.Load() {
				peak.Store(n)
			}
		}
	})
	code, stdout, stderr := runCLI(t, "bench", "saga", "--orders", "20", "--concurrency", "2", "--modes", "success,compensate",
		"--max-db-conns", strconv.Itoa(maxConns), "--application-name", app)
	close(done)
	wg.Wait()
	require.Equal(t, 0, code, stderr)
	t.Logf("stderr:\n%s", stderr)

	lines := strings.Split(strings.TrimRight(stdout, "\n"), "\n")
	require.Len(t, lines, 2, "one JSON line per cell")
	local := isLocal(t, base)
	for i, mode := range []string{"success", "compensate"} {
		var r sagaBenchResult
		dec := json.NewDecoder(strings.NewReader(lines[i]))
		dec.DisallowUnknownFields()
		require.NoError(t, dec.Decode(&r), lines[i])
		require.Equal(t, mode, r.Mode)
		require.Equal(t, 2, r.Concurrency)
		require.Equal(t, maxConns, r.MaxDBConns)
		require.Equal(t, 20, r.Orders)
		if mode == "success" {
			require.Equal(t, 20, r.Completed, lines[i])
		} else {
			require.Equal(t, 20, r.Compensated, lines[i])
		}
		require.Zero(t, r.Stuck+r.Errors+r.Violations, lines[i])
		require.Positive(t, r.SagasPerS)
		require.Positive(t, r.P50MS)
		require.GreaterOrEqual(t, r.P99MS, r.P50MS)

		require.Positive(t, r.GoCPUMSPerSaga, lines[i])
		require.False(t, math.IsInf(r.GoCPUMSPerSaga, 0) || math.IsNaN(r.GoCPUMSPerSaga))
		if local {
			require.Empty(t, r.PGCPUNote, "PostgreSQL runs on this machine")
			require.NotNil(t, r.PGCPUMSPerSaga, lines[i])
			require.Positive(t, *r.PGCPUMSPerSaga, lines[i])
			require.NotNil(t, r.CPUMSPerSaga)
			require.InDelta(t, r.GoCPUMSPerSaga+*r.PGCPUMSPerSaga, *r.CPUMSPerSaga, 0.02)
		} else {
			require.NotEmpty(t, r.PGCPUNote, "no backend CPU without saying why")
		}
		require.GreaterOrEqual(t, r.PGXactPerSaga, 1.0, lines[i])
		require.GreaterOrEqual(t, r.JSPublishesPerSaga, 8.0, "4 commands and 4 replies at least: %s", lines[i])
		require.Positive(t, r.PGBackends)
		require.LessOrEqual(t, r.PGBackends+meterConns, maxConns)
	}
	require.Positive(t, peak.Load(), "the bench's connections carry --application-name")
	require.LessOrEqual(t, peak.Load(), int64(maxConns), "the bench stays within --max-db-conns")
	require.Contains(t, stderr, "xact/saga", "the table is printed")
}

// isLocal says whether the DSN's server is on this machine (the bench can then read its backends).
func isLocal(t *testing.T, dsn string) bool {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" {
		return false
	}
	h := u.Hostname()
	return h == "127.0.0.1" || h == "localhost" || h == "::1"
}

func TestBenchSagaFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"TooFewConnections", []string{"--max-db-conns", "16"}, "--max-db-conns: 16 is fewer than the 17"},
		{"BadApplicationName", []string{"--application-name", "a b"}, "--application-name"},
		{"BadMode", []string{"--modes", "success,sometimes"}, `"sometimes" is neither`},
		{"BadConcurrency", []string{"--concurrency", "1,0"}, `"0" is not a positive integer`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, _, stderr := runCLI(t, append([]string{"bench", "saga"}, tt.args...)...)
			require.Equal(t, exitUsage, code)
			require.Contains(t, stderr, tt.want)
		})
	}
}

func TestPoolSizes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		max, orchestrator, service int
	}{
		{17, 2, 2},
		{24, 9, 2},
		{40, 13, 5},
		{100, 33, 15},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.max), func(t *testing.T) {
			t.Parallel()
			o, s, err := poolSizes(tt.max)
			require.NoError(t, err)
			require.Equal(t, tt.orchestrator, o)
			require.Equal(t, tt.service, s)
			require.LessOrEqual(t, meterConns+listenConns+o+4*s, tt.max)
		})
	}
	_, _, err := poolSizes(minDBConns - 1)
	require.Error(t, err)
}

func TestDSNFor(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, base, want string
	}{
		{"URL", "postgres://u@h:5432/postgres?sslmode=disable", "postgres://u@h:5432/db1?application_name=app&search_path=s1&sslmode=disable"},
		{"KeyValue", "host=h user=u dbname=postgres", "host=h user=u dbname=postgres dbname=db1 search_path=s1 application_name=app"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, dsnFor(tt.base, "db1", "s1", "app"))
		})
	}
}
