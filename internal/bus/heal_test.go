package bus_test

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/sagaflow/sagaflow/internal/bus"
)

// wait is the generous deadline of the tests below: the machine may be busy.
const wait = 2 * time.Minute

// lockedBuffer is a log sink safe for concurrent writes.
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

// observed is what a component under test reports: its metrics and its logs.
type observed struct {
	reader *sdkmetric.ManualReader
	mp     *sdkmetric.MeterProvider
	logs   *lockedBuffer
	log    *slog.Logger
}

func observe(t *testing.T) observed {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	logs := &lockedBuffer{}
	return observed{reader: reader, mp: mp, logs: logs, log: slog.New(slog.NewTextHandler(logs, nil))}
}

// recreated returns sagaflow.bus.recreated for kind and name.
func (o observed) recreated(t *testing.T, kind, name string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, o.reader.Collect(t.Context(), &rm))
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != bus.RecreatedMetric {
				continue
			}
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				k, _ := dp.Attributes.Value("kind")
				nm, _ := dp.Attributes.Value("name")
				if k.AsString() == kind && nm.AsString() == name {
					n += dp.Value
				}
			}
		}
	}
	return n
}

// receive returns the next message from ch, failing the test after the deadline.
func receive(t *testing.T, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m, ok := <-ch:
		require.True(t, ok, "the subscription's channel closed")
		return m
	case <-time.After(wait):
		t.Fatal("no message within the deadline")
	case <-t.Context().Done():
		t.Fatal("test ended")
	}
	return nil
}

func TestSubscriberRecreates(t *testing.T) {
	t.Parallel()

	t.Run("DeletedConsumer", func(t *testing.T) {
		t.Parallel()
		js, pub := setup(t)
		obs := observe(t)
		sub, err := bus.NewSubscriber(js, bus.SubscriberConfig{Stream: bus.StreamEvents, Durable: "svc", FilterSubjects: []string{"events.heal.>"}, Logger: obs.log, MeterProvider: obs.mp})
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, sub.Close()) })
		ch, err := sub.Subscribe(t.Context(), "events.heal.>")
		require.NoError(t, err)

		require.NoError(t, pub.Publish("events.heal.x", message.NewMessage("before", nil)))
		inFlight := receive(t, ch)
		require.Equal(t, "before", inFlight.UUID)

		require.NoError(t, js.DeleteConsumer(t.Context(), bus.StreamEvents, "svc"))
		inFlight.Ack() // goes nowhere: the consumer it came from is gone
		require.NoError(t, pub.Publish("events.heal.x", message.NewMessage("after", nil)))

		seen := map[string]bool{}
		for !seen["before"] || !seen["after"] {
			m := receive(t, ch)
			seen[m.UUID] = true
			m.Ack()
		}
		require.Equal(t, int64(1), obs.recreated(t, "consumer", bus.StreamEvents+"/svc"))
		require.Contains(t, obs.logs.String(), "bus consumer was missing; recreated")
		c, err := js.Consumer(t.Context(), bus.StreamEvents, "svc")
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			info, err := c.Info(context.Background())
			return err == nil && info.NumAckPending == 0 && info.NumPending == 0
		}, wait, 50*time.Millisecond, "everything the recreated consumer delivered was acknowledged")
	})

	t.Run("ConsumerRecreatedAfterTheAckFloor", func(t *testing.T) {
		t.Parallel()
		js, pub := setup(t)
		obs := observe(t)
		// A tiny CheckInterval checks the consumer after every message, so receiving message n+1
		// proves the ack floor was read after message n was handed out.
		sub, err := bus.NewSubscriber(js, bus.SubscriberConfig{Stream: bus.StreamEvents, Durable: "svc", FilterSubjects: []string{"events.floor.>"},
			CheckInterval: time.Nanosecond, MeterProvider: obs.mp})
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, sub.Close()) })
		ch, err := sub.Subscribe(t.Context(), "events.floor.>")
		require.NoError(t, err)
		for _, id := range []string{"old-1", "old-2"} {
			require.NoError(t, pub.Publish("events.floor.x", message.NewMessage(id, nil)))
			m := receive(t, ch)
			require.Equal(t, id, m.UUID)
			m.Ack()
		}
		c, err := js.Consumer(t.Context(), bus.StreamEvents, "svc")
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			info, err := c.Info(context.Background())
			return err == nil && info.AckFloor.Stream == 2
		}, wait, 20*time.Millisecond)
		for _, id := range []string{"sync-1", "new-1"} {
			require.NoError(t, pub.Publish("events.floor.x", message.NewMessage(id, nil)))
			require.Equal(t, id, receive(t, ch).UUID) // left unacknowledged
		}

		require.NoError(t, js.DeleteConsumer(t.Context(), bus.StreamEvents, "svc"))
		require.NoError(t, pub.Publish("events.floor.x", message.NewMessage("new-2", nil)))
		seen := map[string]bool{}
		for !seen["new-1"] || !seen["new-2"] {
			m := receive(t, ch)
			seen[m.UUID] = true
			m.Ack()
		}
		require.False(t, seen["old-1"] || seen["old-2"], "acknowledged before the loss: not replayed (%v)", seen)
		require.Equal(t, int64(1), obs.recreated(t, "consumer", bus.StreamEvents+"/svc"))

		// A process restarted later subscribes to the recreated consumer (which starts at a
		// sequence, a setting JetStream does not let an update change) without an error.
		again, err := bus.NewSubscriber(js, bus.SubscriberConfig{Stream: bus.StreamEvents, Durable: "svc", FilterSubjects: []string{"events.floor.>"}})
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, again.Close()) })
		_, err = again.Subscribe(t.Context(), "events.floor.>")
		require.NoError(t, err)
	})

	t.Run("StreamMissingAtSubscribe", func(t *testing.T) {
		t.Parallel()
		js, _ := setup(t)
		obs := observe(t)
		require.NoError(t, js.DeleteStream(t.Context(), bus.StreamCommands))
		sub, err := bus.NewSubscriber(js, bus.SubscriberConfig{Stream: bus.StreamCommands, Durable: "svc", FilterSubjects: []string{"saga.cmd.svc.>"}, MeterProvider: obs.mp})
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, sub.Close()) })
		_, err = sub.Subscribe(t.Context(), "saga.cmd.svc.>")
		require.NoError(t, err)
		_, err = js.Consumer(t.Context(), bus.StreamCommands, "svc")
		require.NoError(t, err)
		require.Equal(t, int64(1), obs.recreated(t, "stream", bus.StreamCommands))
	})

	t.Run("DeletedStream", func(t *testing.T) {
		t.Parallel()
		js, pub := setup(t)
		// The settings this process applied are the ones a lost stream comes back with.
		require.NoError(t, bus.EnsureStreams(t.Context(), js, bus.StreamsConfig{Duplicates: 7 * time.Minute}))
		obs := observe(t)
		sub, err := bus.NewSubscriber(js, bus.SubscriberConfig{Stream: bus.StreamEvents, Durable: "svc", FilterSubjects: []string{"events.gone.>"}, Logger: obs.log, MeterProvider: obs.mp})
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, sub.Close()) })
		ch, err := sub.Subscribe(t.Context(), "events.gone.>")
		require.NoError(t, err)

		require.NoError(t, js.DeleteStream(t.Context(), bus.StreamEvents))
		require.Eventually(t, func() bool {
			_, err := js.Consumer(context.Background(), bus.StreamEvents, "svc")
			return err == nil
		}, wait, 50*time.Millisecond, "stream and consumer are back")
		s, err := js.Stream(t.Context(), bus.StreamEvents)
		require.NoError(t, err)
		require.Equal(t, 7*time.Minute, s.CachedInfo().Config.Duplicates)
		require.Equal(t, []string{"events.>"}, s.CachedInfo().Config.Subjects)

		require.NoError(t, pub.Publish("events.gone.x", message.NewMessage("after", nil)))
		m := receive(t, ch)
		require.Equal(t, "after", m.UUID)
		m.Ack()
		require.Equal(t, int64(1), obs.recreated(t, "stream", bus.StreamEvents))
		require.Equal(t, int64(1), obs.recreated(t, "consumer", bus.StreamEvents+"/svc"))
		require.Contains(t, obs.logs.String(), "bus stream was missing; recreated")
	})
}

func TestPublisherRecreatesStream(t *testing.T) {
	t.Parallel()
	js, _ := setup(t)
	obs := observe(t)
	pub, err := bus.NewPublisher(js, bus.PublisherConfig{Logger: obs.log, MeterProvider: obs.mp})
	require.NoError(t, err)
	require.NoError(t, js.DeleteStream(t.Context(), bus.StreamCommands))

	err = pub.Publish("saga.cmd.payment.Charge", message.NewMessage("c-1", nil))
	var pe *bus.PublishError
	require.ErrorAs(t, err, &pe, "the stream is gone: the first publish fails")
	require.False(t, bus.IsPermanentPublishError(pe.Failures[0].Err), "an outage, not a bad message: %v", err)

	// A relay retries; the stream comes back and the message goes out.
	require.Eventually(t, func() bool {
		return pub.Publish("saga.cmd.payment.Charge", message.NewMessage("c-1", nil)) == nil
	}, wait, 50*time.Millisecond)
	require.Equal(t, uint64(1), streamMsgs(t, js, bus.StreamCommands))
	require.Equal(t, int64(1), obs.recreated(t, "stream", bus.StreamCommands))
	require.Contains(t, obs.logs.String(), bus.StreamCommands)

	// A subject outside Sagaflow's streams creates nothing.
	require.Error(t, pub.Publish("nostream.x", message.NewMessage("n-1", nil)))
	_, err = js.Stream(t.Context(), "nostream")
	require.ErrorIs(t, err, jetstream.ErrStreamNotFound)
	missing, err := bus.MissingStreams(t.Context(), js)
	require.NoError(t, err)
	require.Empty(t, missing)
	require.NoError(t, js.DeleteStream(t.Context(), bus.StreamDLQ))
	missing, err = bus.MissingStreams(t.Context(), js)
	require.NoError(t, err)
	require.Equal(t, []string{bus.StreamDLQ}, missing)
}

func TestStreamOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		subject, stream string
	}{
		{"saga.cmd.payment.Charge", bus.StreamCommands},
		{"saga.reply.order-fulfilment", bus.StreamReplies},
		{"events.order.placed", bus.StreamEvents},
		{"saga.dlq.saga.cmd.payment.Charge", bus.StreamDLQ},
		{"x.y.z", ""},
		{"saga.cmdx", ""},
	}
	for _, tt := range tests {
		t.Run(tt.subject, func(t *testing.T) {
			t.Parallel()
			got, ok := bus.StreamOf(tt.subject)
			require.Equal(t, tt.stream, got)
			require.Equal(t, tt.stream != "", ok)
		})
	}
}

func TestKeepStreams(t *testing.T) {
	t.Parallel()
	js, _ := setup(t)
	obs := observe(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		bus.KeepStreams(ctx, js, 50*time.Millisecond, obs.log, obs.mp)
	}()
	t.Cleanup(func() { cancel(); <-done })

	require.NoError(t, js.DeleteStream(t.Context(), bus.StreamDLQ))
	require.Eventually(t, func() bool {
		missing, err := bus.MissingStreams(context.Background(), js)
		return err == nil && len(missing) == 0
	}, wait, 20*time.Millisecond, "the dead-letter stream, which nobody publishes to, is back")
	// The count goes up just after the stream is created: wait for it rather than race it.
	require.Eventually(t, func() bool { return obs.recreated(t, "stream", bus.StreamDLQ) >= 1 }, wait, 20*time.Millisecond)
	require.Equal(t, int64(1), obs.recreated(t, "stream", bus.StreamDLQ))
}
