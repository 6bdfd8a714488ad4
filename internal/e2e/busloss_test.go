package e2e_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/internal/orderstack"
	"github.com/sagaflow/sagaflow/internal/telemetry"
)

// TestBusStoreLost: with the orchestrator and the four services running, the NATS server goes
// down (/readyz says so, /healthz does not), comes back with its store wiped (no stream, no
// consumer), and every process recreates what it needs by itself: /readyz is ready again, and
// sagas started after the wipe complete, with no process restarted.
func TestBusStoreLost(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	mp, reg, err := telemetry.NewMeterProvider(t.Context(), telemetry.Config{ServiceName: "sagaflow"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = mp.Shutdown(t.Context()) })
	stack := e.run(t, orderstack.Config{RunOrchestrator: true, HTTPAddr: "127.0.0.1:0", MeterProvider: mp,
		MetricsHandler: telemetry.MetricsHandler(reg)})
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + stack.Addr() + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	waitStatus := func(path string, want int, contains string) {
		t.Helper()
		deadline := time.Now().Add(3 * time.Minute)
		for {
			code, body := get(path)
			if code == want && strings.Contains(body, contains) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: want %d with %s, last answer %d %s", path, want, contains, code, body)
			}
			select {
			case <-t.Context().Done():
				t.Fatalf("%s: test ended; last answer %d %s", path, code, body)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}

	requireHealthy(t, drive(t, stack, 20, 4), 20)
	waitStatus("/readyz", http.StatusOK, `"ready"`)

	e.nats.Stop()
	waitStatus("/readyz", http.StatusServiceUnavailable, `"nats"`)
	code, _ := get("/healthz")
	require.Equal(t, http.StatusOK, code, "alive while NATS is down")

	e.nats.WipeStore()
	e.nats.Start()
	waitStatus("/readyz", http.StatusOK, `"ready"`)
	requireHealthy(t, drive(t, stack, 40, 4), 40)

	// Each kind of loss was noticed and counted: a stream, the orchestrator's reply consumer and a
	// participant's command consumer.
	_, metrics := get("/metrics")
	for _, series := range []string{`kind="stream"`, `name="SAGA_REPLIES/`, `name="SAGA_COMMANDS/sagaflow-participant-payment"`} {
		found := false
		for _, line := range strings.Split(metrics, "\n") {
			if strings.HasPrefix(line, "sagaflow_bus_recreated_total{") && strings.Contains(line, series) {
				found = true
			}
		}
		require.True(t, found, "sagaflow_bus_recreated_total with %s in:\n%s", series, metrics)
	}
}
