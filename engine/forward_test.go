package engine

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/internal/dbtest"
	"github.com/sagaflow/sagaflow/internal/protocol"
	"github.com/sagaflow/sagaflow/outbox"
	"github.com/sagaflow/sagaflow/saga"
)

// fulfilmentDefinition is the example's order saga in small: three compensable steps, then
// schedule-shipping, which has no compensation (a shipment cannot be undone) and declares recovery
// as given (empty: the default, retry_forward). 2 attempts per step, 100ms apart. Only shipping's
// attempts wait as little as shippingTimeout: the other steps answer at once, and their generous
// timeout keeps a busy machine from turning a slow answer into a timeout.
func fulfilmentDefinition(t testing.TB, shippingTimeout time.Duration, shipping saga.Recovery) *saga.Definition {
	t.Helper()
	retry := saga.RetryPolicy{MaxAttempts: 2, Backoff: 100 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, Jitter: definitions.NoJitter}
	d, err := definitions.New("fulfilment", 1).
		DefaultTimeout(30*time.Second).
		DefaultRetry(retry).
		DefaultCompensationRetry(retry).
		Step("create-order", "order", "CreateOrder").Compensation("CancelOrder").
		Step("reserve-inventory", "inventory", "ReserveInventory").Compensation("ReleaseInventory").
		Step("charge-payment", "payment", "ChargePayment").Compensation("RefundPayment").
		Step("schedule-shipping", "shipping", "ScheduleShipping").Recovery(shipping).Timeout(shippingTimeout).
		Build()
	require.NoError(t, err)
	return d
}

// startEngineWithMetrics is world.startEngine with a meter provider whose reader the test reads.
func (w *world) startEngineWithMetrics(db *sqlx.DB, defs *definitions.Registry) (*Engine, *sdkmetric.ManualReader) {
	t := w.t
	t.Helper()
	reader := sdkmetric.NewManualReader()
	relay := outbox.NewRelay(db, w.js, &outbox.RelayConfig{PollInterval: 20 * time.Millisecond})
	e := newEngine(t, db, Config{
		JetStream:     w.js,
		Definitions:   defs,
		TimerInterval: 50 * time.Millisecond,
		MaxDeliver:    3,
		MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)),
		OnCommit:      relay.Wake,
	})
	run(t, "relay", relay.Run)
	run(t, "engine", e.Run)
	return e, reader
}

// lateEffects returns the sagaflow.late_effects data points as "definition/step" → count.
func lateEffects(t *testing.T, reader *sdkmetric.ManualReader) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "sagaflow.late_effects" {
				continue
			}
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				def, _ := dp.Attributes.Value(attribute.Key("definition"))
				step, _ := dp.Attributes.Value(attribute.Key("step"))
				out[def.AsString()+"/"+step.AsString()] += dp.Value
			}
		}
	}
	return out
}

// TestForwardRecovery reproduces issue 11: a step without a compensation whose service is down
// times out on every attempt. The saga must not end compensated while the step's effect may exist
// (it halts, failed, for an operator), and when the service comes back and runs the queued
// command, its late success is recorded, flagged and counted; a redrive then finishes the saga.
func TestForwardRecovery(t *testing.T) {
	t.Parallel()

	t.Run("TimedOutStepThatCannotBeUndoneHalts", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			w := newWorld(t)
			e, reader := w.startEngineWithMetrics(db, registry(t, fulfilmentDefinition(t, 2*time.Second, "")))
			order := w.participant("order", succeed(`{}`))
			inventory := w.participant("inventory", succeed(`{}`))
			payment := w.participant("payment", succeed(`{}`))
			var up atomic.Bool
			var queued atomic.Pointer[protocol.Command]
			shipping := w.participant("shipping", func(cmd protocol.Command) *answer {
				if !up.Load() {
					queued.Store(&cmd) // the service is down: the command waits, unanswered
					return nil
				}
				return &answer{outcome: protocol.OutcomeSuccess, output: `{"shipment":"s-1"}`}
			})

			id, err := e.Start(t.Context(), "fulfilment", "o-11", nil, StartOptions{})
			require.NoError(t, err)
			inst := wait(t, e, id)
			require.Equal(t, saga.StatusFailed, inst.Status, "a saga must not end compensated while an effect nothing undoes may exist")
			require.Equal(t, saga.StepHalted, inst.Steps[3].Status)
			require.Contains(t, inst.LastError, "schedule-shipping")
			require.Empty(t, inst.ToCompensate)
			require.False(t, inst.NeedsAttention, "a failed saga is in the queue by its status")
			require.Equal(t, []string{"ScheduleShipping 1", "ScheduleShipping 2"}, shipping.commands())
			for _, p := range []*participant{order, inventory, payment} {
				require.Len(t, p.commands(), 1, "nothing is compensated: %v", p.commands())
			}

			// The service comes back and runs the queued command: a shipment exists. Its late
			// success is recorded as a late effect, flags the saga and is counted.
			shipping.reply(*queued.Load(), answer{outcome: protocol.OutcomeSuccess, output: `{"shipment":"s-1"}`})
			eventually(t, "late effect recorded", func() bool {
				h := history(t, e, id)
				return h[len(h)-1].Kind == HistoryLateEffect
			})
			h := history(t, e, id)
			last := h[len(h)-1]
			require.Equal(t, "schedule-shipping", last.Step)
			require.Equal(t, 2, last.Attempt)
			require.Equal(t, "success", last.Outcome)
			require.Contains(t, string(last.Detail), "redrive")
			got := get(t, e, id)
			require.Equal(t, saga.StatusFailed, got.Status)
			require.True(t, got.NeedsAttention)
			require.Contains(t, got.Attention, `late effect of step "schedule-shipping"`)
			require.Equal(t, map[string]int64{"fulfilment/schedule-shipping": 1}, lateEffects(t, reader))
			queue, err := e.List(t.Context(), Filter{NeedsAttention: true})
			require.NoError(t, err)
			require.Len(t, queue, 1)
			require.Equal(t, id, queue[0].ID)

			// The operator redrives: the retry is answered (by the barrier's record, in a real
			// participant) and the saga completes; the flag is cleared.
			up.Store(true)
			require.NoError(t, e.Redrive(t.Context(), id, "sre", "shipping is back"))
			inst = wait(t, e, id)
			require.Equal(t, saga.StatusCompleted, inst.Status)
			require.False(t, inst.NeedsAttention)
			require.JSONEq(t, `{"shipment":"s-1"}`, string(inst.Data.Steps["schedule-shipping"]))
			queue, err = e.List(t.Context(), Filter{NeedsAttention: true})
			require.NoError(t, err)
			require.Empty(t, queue)
		})
	})

	t.Run("LateSuccessOfStepWithNothingToUndo", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			w := newWorld(t)
			// The author declares that shipping has nothing to undo: the saga compensates.
			e, reader := w.startEngineWithMetrics(db, registry(t, fulfilmentDefinition(t, time.Second, saga.RecoveryCompensate)))
			for _, svc := range []string{"order", "inventory", "payment"} {
				w.participant(svc, succeed(`{}`))
			}
			var queued atomic.Pointer[protocol.Command]
			shipping := w.participant("shipping", func(cmd protocol.Command) *answer {
				queued.Store(&cmd)
				return nil
			})
			id, err := e.Start(t.Context(), "fulfilment", "o-12", nil, StartOptions{})
			require.NoError(t, err)
			require.Equal(t, saga.StatusCompensated, wait(t, e, id).Status)

			// Yet the command ran after all: the late success is not silent.
			shipping.reply(*queued.Load(), answer{outcome: protocol.OutcomeSuccess, output: `{}`})
			eventually(t, "late effect recorded", func() bool {
				h := history(t, e, id)
				return h[len(h)-1].Kind == HistoryLateEffect
			})
			got := get(t, e, id)
			require.Equal(t, saga.StatusCompensated, got.Status)
			require.True(t, got.NeedsAttention)
			require.Contains(t, got.Attention, "reconcile it by hand")
			require.Equal(t, map[string]int64{"fulfilment/schedule-shipping": 1}, lateEffects(t, reader))

			// The same reply for another attempt is recorded too, but counted once.
			first := *queued.Load()
			first.Attempt, first.MessageID = 1, commandID(id, "schedule-shipping", "forward", 1)
			shipping.reply(first, answer{outcome: protocol.OutcomeSuccess, output: `{}`})
			eventually(t, "second late reply recorded", func() bool {
				n := 0
				for _, h := range history(t, e, id) {
					if h.Kind == HistoryLateEffect {
						n++
					}
				}
				return n == 2
			})
			require.Equal(t, map[string]int64{"fulfilment/schedule-shipping": 1}, lateEffects(t, reader))

			// Reconciled by hand, the operator takes it out of the queue; that is audited.
			require.NoError(t, e.Resolve(t.Context(), id, "sre", "shipment s-1 recalled"))
			got = get(t, e, id)
			require.False(t, got.NeedsAttention)
			require.Empty(t, got.Attention)
			require.Equal(t, saga.StatusCompensated, got.Status)
			h := history(t, e, id)
			last := h[len(h)-1]
			require.Equal(t, HistoryResolved, last.Kind)
			require.Equal(t, "sre", last.Actor)
			require.Contains(t, string(last.Detail), "shipment s-1 recalled")
			require.ErrorIs(t, e.Resolve(t.Context(), id, "sre", "again"), ErrNoAttention)
			require.ErrorIs(t, e.Resolve(t.Context(), "nope", "sre", ""), ErrNotFound)
		})
	})
}
