package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/internal/natstest"
	"github.com/sagaflow/sagaflow/internal/sqldb"
	"github.com/sagaflow/sagaflow/internal/sqlitetest"
	"github.com/sagaflow/sagaflow/outbox"
)

// TestRelayServesMetrics runs "sagaflow relay --metrics" on a SQLite outbox holding three
// messages and scrapes its /metrics until they are published.
func TestRelayServesMetrics(t *testing.T) {
	t.Parallel()
	path := sqlitetest.Path(t)
	db, err := sqldb.Open(t.Context(), "sqlite:"+path)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	require.NoError(t, outbox.Migrate(t.Context(), db))
	tx, err := db.BeginTxx(t.Context(), nil)
	require.NoError(t, err)
	w := outbox.NewWriter(db, nil)
	for range 3 {
		require.NoError(t, w.Write(t.Context(), tx, "saga.cmd.billing.Invoice", message.NewMessage("", []byte(`{}`))))
	}
	require.NoError(t, tx.Commit())

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	ns := natstest.New(t, nil)
	ctx, cancel := context.WithCancel(t.Context())
	var stdout, stderr bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"relay", "--db", "sqlite:" + path, "--nats", ns.URL(), "--name", "billing",
			"--metrics", addr, "--log-format", "text"}, &stdout, &stderr)
	}()
	var body string
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return strings.Contains(body, `sagaflow_relay_published_total{outbox="billing"} 3`) &&
			strings.Contains(body, `sagaflow_outbox_backlog{outbox="billing"} 0`)
	}, 20*time.Second, 50*time.Millisecond, "metrics:\n%s\nstderr:\n%s", body, &stderr)
	require.Contains(t, body, `service_name="sagaflow-relay"`)

	// Liveness and readiness beside /metrics: not ready while NATS is down, ready again after.
	probe := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	waitReadyz := func(want int, contains string) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for {
			code, body := probe("/readyz")
			if code == want && strings.Contains(body, contains) {
				return
			}
			if time.Now().After(deadline) || t.Context().Err() != nil {
				t.Fatalf("readyz: want %d with %s, last answer %d %s", want, contains, code, body)
			}
			select {
			case <-t.Context().Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	code, _ := probe("/healthz")
	require.Equal(t, http.StatusOK, code)
	waitReadyz(http.StatusOK, `"ready"`)
	ns.Stop()
	waitReadyz(http.StatusServiceUnavailable, `"nats"`)
	code, _ = probe("/healthz")
	require.Equal(t, http.StatusOK, code, "alive while NATS is down")
	ns.Start()
	waitReadyz(http.StatusOK, `"ready"`)
	cancel()
	require.Equal(t, 0, <-done, stderr.String())
}
