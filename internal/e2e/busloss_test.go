package e2e_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	order "github.com/sagaflow/sagaflow/examples/order"
	"github.com/sagaflow/sagaflow/examples/order/driver"
	"github.com/sagaflow/sagaflow/internal/telemetry"
	"github.com/sagaflow/sagaflow/saga"
)

// TestBusStoreLost: with the orchestrator and the four services running, the NATS server goes
// down (/readyz says so, /healthz does not), comes back with its store wiped (no stream, no
// consumer), and every process recreates what it needs by itself: /readyz is ready again, sagas
// started after the wipe complete, and those in flight at the wipe end (completed or compensated,
// none stuck), with no process restarted.
func TestBusStoreLost(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	mp, reg, err := telemetry.NewMeterProvider(t.Context(), telemetry.Config{ServiceName: "sagaflow"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = mp.Shutdown(t.Context()) })
	stack := e.run(t, stackConfig{RunOrchestrator: true, HTTPAddr: "127.0.0.1:0", MeterProvider: mp,
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

	// Sagas in flight when the store goes: their commands and replies are lost with it.
	gen := order.NewGenerator(5, "lost")
	var inFlight []string
	for range 20 {
		in := gen.Next()
		raw, err := json.Marshal(in)
		require.NoError(t, err)
		id, err := stack.Starter().Start(t.Context(), in.OrderID, raw)
		require.NoError(t, err)
		inFlight = append(inFlight, id)
	}

	e.nats.Stop()
	waitStatus("/readyz", http.StatusServiceUnavailable, `"nats"`)
	code, _ := get("/healthz")
	require.Equal(t, http.StatusOK, code, "alive while NATS is down")

	e.nats.WipeStore()
	e.nats.Start()
	waitStatus("/readyz", http.StatusOK, `"ready"`)
	requireHealthy(t, drive(t, stack, 40, 4), 40)

	// Those in flight end too, through their deadlines and retries (none is stuck), and no
	// business invariant broke.
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	for _, id := range inFlight {
		status, err := stack.Starter().Wait(ctx, id)
		require.NoError(t, err, "saga %s in flight at the loss ends", id)
		require.Contains(t, []string{string(saga.StatusCompleted), string(saga.StatusCompensated)}, status, id)
	}
	violations, err := driver.Check(t.Context(), stack.DriverDBs())
	require.NoError(t, err)
	require.Empty(t, violations)

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
