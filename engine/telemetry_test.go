package engine

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/sagaflow/sagaflow/internal/dbtest"
	"github.com/sagaflow/sagaflow/internal/protocol"
	"github.com/sagaflow/sagaflow/internal/telemetry"
	"github.com/sagaflow/sagaflow/saga"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestTelemetryOfASaga drives a saga by hand through a success, a timed-out attempt, a retry that
// fails, and a compensation, and checks its spans (ids, parents, true times, outcomes), the
// traceparent of every command, the metrics and the log lines.
func TestTelemetryOfASaga(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
		rec := tracetest.NewSpanRecorder()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithIDGenerator(TraceIDGenerator()))
		reader := sdkmetric.NewManualReader()
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
		var logs lockedBuffer
		clk := newClock()
		e := newEngine(t, db, Config{
			Now: clk.Now, TracerProvider: tp, MeterProvider: mp, Definitions: registry(t, orderDefinition(t, "order", 10*time.Second)),
			Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		})
		ctx := t.Context()

		started := clk.Now()
		id, err := e.Start(ctx, "order", "o-1", nil, StartOptions{})
		require.NoError(t, err)
		clk.Advance(time.Second)
		require.Equal(t, []error{nil}, applyReplies(t, e, reply(id, "order", "create-order", 1, false, protocol.OutcomeSuccess, "")))
		// reserve-inventory attempt 1 times out; attempt 2 is sent after the backoff and fails.
		clk.Advance(10 * time.Second)
		fire(t, e)
		clk.Advance(time.Second)
		fire(t, e)
		clk.Advance(2 * time.Second)
		require.Equal(t, []error{nil}, applyReplies(t, e, reply(id, "order", "reserve-inventory", 2, false, protocol.OutcomeFailure, "")))
		clk.Advance(time.Second)
		require.Equal(t, []error{nil}, applyReplies(t, e, reply(id, "order", "create-order", 1, true, protocol.OutcomeSuccess, "")))
		in := get(t, e, id)
		require.Equal(t, saga.StatusCompensated, in.Status)

		spans := map[string]sdktrace.ReadOnlySpan{}
		for _, s := range rec.Ended() {
			attempt := ""
			for _, kv := range s.Attributes() {
				if kv.Key == telemetry.AttemptKey {
					attempt = " " + kv.Value.String()
				}
			}
			spans[s.Name()+attempt] = s
		}
		require.Len(t, spans, 5, "root, create-order, reserve-inventory 1 and 2, compensate create-order: %v", spans)
		root := spans["order"]
		require.NotNil(t, root)
		require.Equal(t, in.TraceID, root.SpanContext().TraceID().String())
		require.Equal(t, rootSpanID(id), root.SpanContext().SpanID())
		require.True(t, root.StartTime().Equal(started))
		require.True(t, root.EndTime().Equal(clk.Now()))
		require.Equal(t, codes.Error, root.Status().Code)

		commands := commandTraceparents(t, db)
		for _, c := range []struct {
			span, key   string
			start, end  time.Duration // from the saga's start
			wantOutcome string
			code        codes.Code
		}{
			{"step create-order 1", "create-order forward 1", 0, time.Second, "success", codes.Unset},
			{"step reserve-inventory 1", "reserve-inventory forward 1", time.Second, 11 * time.Second, "timeout", codes.Error},
			{"step reserve-inventory 2", "reserve-inventory forward 2", 12 * time.Second, 14 * time.Second, "failure", codes.Error},
			{"compensate create-order 1", "create-order compensate 1", 14 * time.Second, 15 * time.Second, "success", codes.Unset},
		} {
			s := spans[c.span]
			require.NotNil(t, s, c.span)
			require.Equal(t, root.SpanContext().SpanID(), s.Parent().SpanID(), c.span)
			require.Equal(t, root.SpanContext().TraceID(), s.SpanContext().TraceID(), c.span)
			require.Equal(t, "00-"+in.TraceID+"-"+s.SpanContext().SpanID().String()+"-01", commands[c.key],
				"%s: the command's traceparent names the span", c.span)
			require.True(t, s.StartTime().Equal(started.Add(c.start)), "%s starts %s", c.span, s.StartTime().Sub(started))
			require.True(t, s.EndTime().Equal(started.Add(c.end)), "%s ends %s", c.span, s.EndTime().Sub(started))
			require.Equal(t, c.code, s.Status().Code, c.span)
			var outcome string
			for _, kv := range s.Attributes() {
				if kv.Key == telemetry.OutcomeKey {
					outcome = kv.Value.AsString()
				}
			}
			require.Equal(t, c.wantOutcome, outcome, c.span)
		}

		var rm metricdata.ResourceMetrics
		require.NoError(t, reader.Collect(context.Background(), &rm))
		sums := map[string]int64{}
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if s, ok := m.Data.(metricdata.Sum[int64]); ok {
					for _, dp := range s.DataPoints {
						sums[m.Name] += dp.Value
					}
				}
				if h, ok := m.Data.(metricdata.Histogram[float64]); ok {
					for _, dp := range h.DataPoints {
						sums[m.Name] += int64(dp.Count)
					}
				}
			}
		}
		require.Equal(t, map[string]int64{
			"sagaflow.sagas.started": 1, "sagaflow.sagas.finished": 1, "sagaflow.step.duration": 4,
			"sagaflow.step.retries": 1, "sagaflow.step.timeouts": 1,
		}, sums)

		// Every log line about the saga names it, its definition, its step and its trace.
		n := 0
		sc := bufio.NewScanner(strings.NewReader(logs.String()))
		for sc.Scan() {
			var line map[string]any
			require.NoError(t, json.Unmarshal(sc.Bytes(), &line))
			if line["saga_id"] == nil {
				continue
			}
			n++
			require.Equal(t, id, line["saga_id"], sc.Text())
			require.Equal(t, "order", line["definition"], sc.Text())
			require.NotEmpty(t, line["step"], sc.Text())
			require.Equal(t, in.TraceID, line["trace_id"], sc.Text())
		}
		require.GreaterOrEqual(t, n, 4, "started, the timeout, the failure, finished:\n%s", logs.String())
	})
}

// fire fires the due deadlines once.
func fire(t *testing.T, e *Engine) {
	t.Helper()
	_, err := e.fireDue(t.Context())
	require.NoError(t, err)
}

// commandTraceparents maps "step action attempt" to the traceparent of each command in the outbox.
func commandTraceparents(t *testing.T, db *sqlx.DB) map[string]string {
	t.Helper()
	var rows []struct {
		Headers []byte `db:"headers"`
	}
	require.NoError(t, db.SelectContext(t.Context(), &rows, `SELECT headers FROM sagaflow_outbox`))
	out := map[string]string{}
	for _, r := range rows {
		var h map[string]string
		require.NoError(t, json.Unmarshal(r.Headers, &h))
		out[h[protocol.HeaderStep]+" "+h[protocol.HeaderAction]+" "+h[protocol.HeaderAttempt]] = h[protocol.HeaderTraceparent]
	}
	return out
}
