package bus_test

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/natstest"
)

func TestSubscriberDurable(t *testing.T) {
	t.Parallel()
	js := natstest.New(t, nil).JetStream(t)
	tests := []struct {
		name    string
		filters []string
		topic   string
		want    string
	}{
		{"FilterSubjectsKeepTheConfiguredName", []string{"saga.cmd.payment.>"}, "saga.cmd.payment.>", "svc"},
		{"TopicWithDots", nil, "events.order.placed", "svc_events_order_placed_"},
		{"Wildcards", nil, "events.*.>", "svc_events_____"},
		{"Long", nil, "events." + strings.Repeat("x", 300), "svc_events_xxx"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sub, err := bus.NewSubscriber(js, bus.SubscriberConfig{Stream: bus.StreamEvents, Durable: "svc", FilterSubjects: tt.filters})
			require.NoError(t, err)
			name := sub.Durable(tt.topic)
			require.True(t, strings.HasPrefix(name, tt.want), name)
			require.Equal(t, name, sub.Durable(tt.topic), "deterministic")
			require.LessOrEqual(t, len(name), 128)
			require.False(t, strings.ContainsAny(name, ".*> "), name)
		})
	}
	sub, err := bus.NewSubscriber(js, bus.SubscriberConfig{Stream: bus.StreamEvents, Durable: "svc"})
	require.NoError(t, err)
	require.NotEqual(t, sub.Durable("events.a.b"), sub.Durable("events.a_b"), "the hash keeps topics apart")
}

func TestSubscriberTopics(t *testing.T) {
	t.Parallel()
	js, pub := setup(t)
	sub, err := bus.NewSubscriber(js, bus.SubscriberConfig{Stream: bus.StreamEvents, Durable: "two"})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, sub.Close()) })
	first, err := sub.Subscribe(t.Context(), "events.one.x")
	require.NoError(t, err)
	second, err := sub.Subscribe(t.Context(), "events.two.x")
	require.NoError(t, err)
	require.NoError(t, pub.Publish("events.one.x", message.NewMessage("one", nil)))
	require.NoError(t, pub.Publish("events.two.x", message.NewMessage("two", nil)))
	for _, tt := range []struct {
		ch    <-chan *message.Message
		topic string
		want  string
	}{{first, "events.one.x", "one"}, {second, "events.two.x", "two"}} {
		m := receive(t, tt.ch)
		require.Equal(t, tt.want, m.UUID)
		require.Equal(t, tt.topic, m.Metadata.Get(bus.SubjectKey))
		m.Ack()
		select {
		case <-m.Context().Done():
		case <-time.After(wait):
			t.Fatal("the message's context is not cancelled after Ack")
		}
		c, err := js.Consumer(t.Context(), bus.StreamEvents, sub.Durable(tt.topic))
		require.NoError(t, err)
		require.Equal(t, tt.topic, c.CachedInfo().Config.FilterSubject, "the second Subscribe did not re-filter the first consumer")
	}
}

func TestSubscriberHandsBackOnClose(t *testing.T) {
	t.Parallel()
	js, pub := setup(t)
	cfg := bus.SubscriberConfig{Stream: bus.StreamEvents, Durable: "back", FilterSubjects: []string{"events.back.>"},
		AckWait: time.Hour, MaxInFlight: 8}
	msgs := make([]*message.Message, 5)
	for i := range msgs {
		msgs[i] = message.NewMessage(fmt.Sprintf("b-%d", i), nil)
	}
	require.NoError(t, pub.Publish("events.back.x", msgs...))

	first, err := bus.NewSubscriber(js, cfg)
	require.NoError(t, err)
	ch, err := first.Subscribe(t.Context(), "events.back.>")
	require.NoError(t, err)
	m := receive(t, ch) // the others are fetched too, and wait in the iterator
	require.NoError(t, first.Close())
	select {
	case <-m.Context().Done():
	default:
		t.Fatal("the message's context is not cancelled when its subscription ends")
	}

	// With an AckWait of an hour, only the hand-back (a Nak at close) lets the next subscriber of
	// the group have the fetched messages now. The one handed out and left unsettled stays with
	// JetStream's AckWait: its handler may still be running.
	next, err := bus.NewSubscriber(js, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, next.Close()) })
	ch, err = next.Subscribe(t.Context(), "events.back.>")
	require.NoError(t, err)
	seen := map[string]bool{}
	for len(seen) < len(msgs)-1 {
		got := receive(t, ch)
		require.NotEqual(t, m.UUID, got.UUID, "the unsettled message is not handed back")
		seen[got.UUID] = true
		got.Ack()
	}
}

func TestSubscriberAbandons(t *testing.T) {
	t.Parallel()
	js, pub := setup(t)
	obs := observe(t)
	sub, err := bus.NewSubscriber(js, bus.SubscriberConfig{Stream: bus.StreamEvents, Durable: "lost", FilterSubjects: []string{"events.lost.>"},
		MaxDeliver: 2, Logger: obs.log, MeterProvider: obs.mp})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, sub.Close()) })
	ch, err := sub.Subscribe(t.Context(), "events.lost.>")
	require.NoError(t, err)
	require.NoError(t, pub.Publish("events.lost.x", message.NewMessage("l-1", nil)))

	receive(t, ch).Nack()
	require.NotContains(t, obs.logs.String(), "abandoned", "a delivery that is not the last is redelivered")
	last := receive(t, ch)
	require.Equal(t, "2", last.Metadata.Get(bus.DeliveryKey))
	last.Nack()
	deadline := time.Now().Add(wait)
	for !strings.Contains(obs.logs.String(), "message abandoned") {
		require.True(t, time.Now().Before(deadline), "no Error log for the abandoned message: %s", obs.logs.String())
		runtime.Gosched()
	}
	logs := obs.logs.String()
	require.Contains(t, logs, "level=ERROR")
	require.Contains(t, logs, "message_id=l-1")
	var rm metricdata.ResourceMetrics
	require.NoError(t, obs.reader.Collect(t.Context(), &rm))
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == bus.AbandonedMetric {
				for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
					n += dp.Value
				}
			}
		}
	}
	require.Equal(t, int64(1), n)
}
