package bus_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/natstest"
)

// consumed is one handler call the test saw: its batch, and where to send its verdicts.
type consumed struct {
	batch    []bus.Delivery
	verdicts chan<- []bus.Verdict
}

// runConsumer runs a Consumer with cfg until the test ends and returns its handler calls; the test
// answers each call on its verdicts channel.
func runConsumer(t *testing.T, js jetstream.JetStream, cfg bus.ConsumerConfig) <-chan consumed {
	t.Helper()
	c, err := bus.NewConsumer(js, cfg)
	require.NoError(t, err)
	calls := make(chan consumed)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- c.Run(ctx, func(_ context.Context, batch []bus.Delivery) []bus.Verdict {
			answer := make(chan []bus.Verdict, 1)
			select {
			case calls <- consumed{batch: batch, verdicts: answer}:
			case <-ctx.Done():
				return nil
			}
			select {
			case v := <-answer:
				return v
			case <-ctx.Done():
				return nil
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return calls
}

// next returns the next handler call, failing the test after the deadline.
func next(t *testing.T, calls <-chan consumed) consumed {
	t.Helper()
	select {
	case c := <-calls:
		return c
	case <-time.After(wait):
		t.Fatal("no batch within the deadline")
	}
	return consumed{}
}

// answerAll answers c with v for every delivery.
func answerAll(c consumed, v bus.Verdict) {
	vs := make([]bus.Verdict, len(c.batch))
	for i := range vs {
		vs[i] = v
	}
	c.verdicts <- vs
}

// settled waits until the consumer has nothing pending and nothing unacknowledged.
func settled(t *testing.T, js jetstream.JetStream, stream, durable string) {
	t.Helper()
	require.Eventually(t, func() bool {
		c, err := js.Consumer(context.Background(), stream, durable)
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0 && info.NumRedelivered == 0
	}, wait, 20*time.Millisecond)
}

// dlqMessage returns the next message stored in SAGA_DLQ.
func dlqMessage(t *testing.T, js jetstream.JetStream) jetstream.Msg {
	t.Helper()
	select {
	case m := <-natstest.Consume(t, js, bus.StreamDLQ):
		return m
	case <-time.After(wait):
		t.Fatal("nothing dead-lettered within the deadline")
	}
	return nil
}

func TestConsumer(t *testing.T) {
	t.Parallel()

	t.Run("BatchesWhatWasDelivered", func(t *testing.T) {
		t.Parallel()
		js, pub := setup(t)
		calls := runConsumer(t, js, bus.ConsumerConfig{Stream: bus.StreamEvents, Durable: "batch", FilterSubjects: []string{"events.batch.>"}, Batch: 4})
		require.NoError(t, pub.Publish("events.batch.x", message.NewMessage("m0", []byte("p0"))))
		first := next(t, calls)
		require.Len(t, first.batch, 1)
		d := first.batch[0]
		require.Equal(t, "m0", d.ID)
		require.Equal(t, "events.batch.x", d.Subject)
		require.Equal(t, []byte("p0"), d.Payload)
		require.Equal(t, 1, d.Attempt)
		// While the first batch is being handled, more messages arrive; the next batch takes all
		// that JetStream has delivered, up to Batch.
		var msgs []*message.Message
		for i := 1; i <= 9; i++ {
			m := message.NewMessage(fmt.Sprintf("m%d", i), nil)
			m.Metadata.Set("Order-Id", fmt.Sprint(i))
			msgs = append(msgs, m)
		}
		require.NoError(t, pub.Publish("events.batch.x", msgs...))
		c, err := js.Consumer(t.Context(), bus.StreamEvents, "batch")
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			info, err := c.Info(context.Background())
			return err == nil && info.NumAckPending >= 4
		}, wait, 10*time.Millisecond, "JetStream delivers ahead while a batch is handled")
		require.NoError(t, js.Conn().Flush(), "what the server sent is in the client's buffer")
		answerAll(first, bus.Ack())
		got := 1
		sawFull := false
		for got < 10 {
			call := next(t, calls)
			require.LessOrEqual(t, len(call.batch), 4)
			sawFull = sawFull || len(call.batch) > 1
			for _, d := range call.batch {
				require.Equal(t, d.ID[1:], d.Headers.Get("Order-Id"), "headers arrive with case kept")
			}
			got += len(call.batch)
			answerAll(call, bus.Ack())
		}
		require.Equal(t, 10, got)
		require.True(t, sawFull, "the messages delivered during the first batch came in one batch")
		settled(t, js, bus.StreamEvents, "batch")
	})

	t.Run("RetryRedeliversAfterTheDelay", func(t *testing.T) {
		t.Parallel()
		js, pub := setup(t)
		calls := runConsumer(t, js, bus.ConsumerConfig{Stream: bus.StreamEvents, Durable: "retry", FilterSubjects: []string{"events.retry.>"}})
		require.NoError(t, pub.Publish("events.retry.x", message.NewMessage("r", nil)))
		first := next(t, calls)
		require.Equal(t, 1, first.batch[0].Attempt)
		const delay = 300 * time.Millisecond
		nacked := time.Now()
		answerAll(first, bus.Retry(delay, errors.New("not yet")))
		again := next(t, calls)
		require.GreaterOrEqual(t, time.Since(nacked), delay, "redelivered no earlier than the delay")
		require.Equal(t, "r", again.batch[0].ID)
		require.Equal(t, 2, again.batch[0].Attempt)
		answerAll(again, bus.Ack())
		settled(t, js, bus.StreamEvents, "retry")
	})

	t.Run("DeadLetterWithReason", func(t *testing.T) {
		t.Parallel()
		js, pub := setup(t)
		obs := observe(t)
		calls := runConsumer(t, js, bus.ConsumerConfig{Stream: bus.StreamEvents, Durable: "dead", FilterSubjects: []string{"events.dead.>"},
			Logger: obs.log, MeterProvider: obs.mp})
		good, bad := message.NewMessage("good", nil), message.NewMessage("bad", []byte(`{"x":1}`))
		bad.Metadata.Set("Sagaflow-Saga-Id", "s1")
		require.NoError(t, pub.Publish("events.dead.x", good, bad))
		seen := 0
		for seen < 2 {
			call := next(t, calls)
			vs := make([]bus.Verdict, len(call.batch))
			for i, d := range call.batch {
				if d.ID == "bad" {
					vs[i] = bus.ToDeadLetter("malformed: no order id")
				}
			}
			seen += len(call.batch)
			call.verdicts <- vs
		}
		dl := dlqMessage(t, js)
		require.Equal(t, bus.DLQPrefix+"events.dead.x", dl.Subject())
		require.Equal(t, "malformed: no order id", dl.Headers().Get(bus.HeaderDLQReason))
		require.Equal(t, "events.dead.x", dl.Headers().Get(bus.HeaderDLQSubject))
		require.Equal(t, "1", dl.Headers().Get(bus.HeaderDLQDeliveries))
		require.Equal(t, "s1", dl.Headers().Get("Sagaflow-Saga-Id"))
		require.Equal(t, bus.MsgID(dl.Subject(), "bad"), dl.Headers().Get("Nats-Msg-Id"))
		require.JSONEq(t, `{"x":1}`, string(dl.Data()))
		settled(t, js, bus.StreamEvents, "dead")
		require.Equal(t, int64(1), deadLettered(t, obs, "dead"))
		require.Contains(t, obs.logs.String(), "message dead-lettered")
	})

	t.Run("LastDeliveryGoesToTheDeadLetterStream", func(t *testing.T) {
		t.Parallel()
		js, pub := setup(t)
		calls := runConsumer(t, js, bus.ConsumerConfig{Stream: bus.StreamEvents, Durable: "last", FilterSubjects: []string{"events.last.>"}, MaxDeliver: 2})
		require.NoError(t, pub.Publish("events.last.x", message.NewMessage("flaky", nil)))
		answerAll(next(t, calls), bus.Retry(0, errors.New("database down")))
		last := next(t, calls)
		require.Equal(t, 2, last.batch[0].Attempt)
		answerAll(last, bus.Retry(0, errors.New("database down")))
		dl := dlqMessage(t, js)
		require.Equal(t, "database down (delivery 2 of 2)", dl.Headers().Get(bus.HeaderDLQReason))
		require.Equal(t, "2", dl.Headers().Get(bus.HeaderDLQDeliveries))
		settled(t, js, bus.StreamEvents, "last")
	})

	t.Run("MissingVerdictRetries", func(t *testing.T) {
		t.Parallel()
		js, pub := setup(t)
		calls := runConsumer(t, js, bus.ConsumerConfig{Stream: bus.StreamEvents, Durable: "short", FilterSubjects: []string{"events.short.>"}})
		require.NoError(t, pub.Publish("events.short.x", message.NewMessage("m", nil)))
		next(t, calls).verdicts <- nil
		again := next(t, calls)
		require.Equal(t, 2, again.batch[0].Attempt)
		answerAll(again, bus.Ack())
		settled(t, js, bus.StreamEvents, "short")
	})

	t.Run("LongBatchStaysInProgress", func(t *testing.T) {
		t.Parallel()
		js, pub := setup(t)
		calls := runConsumer(t, js, bus.ConsumerConfig{Stream: bus.StreamEvents, Durable: "long", FilterSubjects: []string{"events.long.>"}, AckWait: time.Second})
		require.NoError(t, pub.Publish("events.long.x", message.NewMessage("slow", nil)))
		call := next(t, calls)
		// Held for several AckWaits: the in-progress acks keep JetStream from redelivering it.
		c, err := js.Consumer(t.Context(), bus.StreamEvents, "long")
		require.NoError(t, err)
		deadline := time.Now().Add(2500 * time.Millisecond)
		for time.Now().Before(deadline) {
			info, err := c.Info(t.Context())
			require.NoError(t, err)
			require.Zero(t, info.NumRedelivered, "redelivered while in progress")
			time.Sleep(100 * time.Millisecond)
		}
		answerAll(call, bus.Ack())
		settled(t, js, bus.StreamEvents, "long")
	})

	t.Run("RecreatesALostStream", func(t *testing.T) {
		t.Parallel()
		js, pub := setup(t)
		obs := observe(t)
		calls := runConsumer(t, js, bus.ConsumerConfig{Stream: bus.StreamEvents, Durable: "heal", FilterSubjects: []string{"events.heal.>"},
			CheckInterval: 50 * time.Millisecond, Logger: obs.log, MeterProvider: obs.mp})
		require.NoError(t, pub.Publish("events.heal.x", message.NewMessage("before", nil)))
		answerAll(next(t, calls), bus.Ack())
		require.NoError(t, js.DeleteStream(t.Context(), bus.StreamEvents))
		require.Eventually(t, func() bool {
			return obs.recreated(t, "consumer", bus.StreamEvents+"/heal") == 1
		}, wait, 20*time.Millisecond, "the consumer (and its stream) come back")
		require.NoError(t, pub.Publish("events.heal.x", message.NewMessage("after", nil)))
		call := next(t, calls)
		require.Equal(t, "after", call.batch[0].ID)
		answerAll(call, bus.Ack())
		settled(t, js, bus.StreamEvents, "heal")
	})

	t.Run("Config", func(t *testing.T) {
		t.Parallel()
		js := natstest.New(t, nil).JetStream(t)
		_, err := bus.NewConsumer(js, bus.ConsumerConfig{Batch: -1, Namespace: "Bad"})
		require.ErrorContains(t, err, "Stream: required")
		require.ErrorContains(t, err, "FilterSubjects")
		require.ErrorContains(t, err, "Batch -1")
		require.ErrorContains(t, err, "Namespace")
	})
}

// deadLettered returns sagaflow.dead_lettered for consumer.
func deadLettered(t *testing.T, o observed, consumer string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, o.reader.Collect(t.Context(), &rm))
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "sagaflow.dead_lettered" {
				continue
			}
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				if c, _ := dp.Attributes.Value("consumer"); c.AsString() == consumer {
					n += dp.Value
				}
			}
		}
	}
	return n
}
