package bus_test

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/natstest"
)

// TestStreamRetention: commands and replies are work queues (an acked message leaves the stream, an
// unconsumed one stays), EVENTS and SAGA_DLQ keep limits retention with their own MaxAge.
func TestStreamRetention(t *testing.T) {
	t.Parallel()
	t.Run("Policies", func(t *testing.T) {
		t.Parallel()
		js := natstest.New(t, nil).JetStream(t)
		require.NoError(t, bus.EnsureStreams(t.Context(), js, bus.StreamsConfig{MaxAge: time.Hour, DLQMaxAge: 48 * time.Hour}))
		want := map[string]struct {
			retention jetstream.RetentionPolicy
			maxAge    time.Duration
		}{
			bus.StreamCommands: {jetstream.WorkQueuePolicy, 0},
			bus.StreamReplies:  {jetstream.WorkQueuePolicy, 0},
			bus.StreamEvents:   {jetstream.LimitsPolicy, time.Hour},
			bus.StreamDLQ:      {jetstream.LimitsPolicy, 48 * time.Hour},
		}
		for name, w := range want {
			s, err := js.Stream(t.Context(), name)
			require.NoError(t, err)
			require.Equal(t, w.retention, s.CachedInfo().Config.Retention, name)
			require.Equal(t, w.maxAge, s.CachedInfo().Config.MaxAge, name)
		}
	})

	for _, tt := range []struct{ name, stream, subject, durable string }{
		{"AckedCommandLeaves", bus.StreamCommands, "saga.cmd.payment.Charge", "payment"},
		{"AckedReplyLeaves", bus.StreamReplies, "saga.reply.order", "orchestrator"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			js, pub := setup(t)
			// Published before any consumer exists: kept until one acknowledges it.
			require.NoError(t, pub.Publish(tt.subject, message.NewMessage("m-1", []byte("{}"))))
			require.Equal(t, uint64(1), streamMsgs(t, js, tt.stream))

			sub, err := bus.NewSubscriber(js, bus.SubscriberConfig{Stream: tt.stream, Durable: tt.durable})
			require.NoError(t, err)
			router, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
			require.NoError(t, err)
			handled := make(chan string, 1)
			router.AddConsumerHandler(tt.durable, tt.subject, sub, func(msg *message.Message) error {
				handled <- msg.UUID
				return nil
			})
			done := make(chan error, 1)
			go func() { done <- router.Run(context.Background()) }()
			t.Cleanup(func() { require.NoError(t, router.Close()); require.NoError(t, <-done) })
			select {
			case id := <-handled:
				require.Equal(t, "m-1", id)
			case <-t.Context().Done():
				t.Fatal("message not delivered")
			}
			require.Eventually(t, func() bool { return streamMsgs(t, js, tt.stream) == 0 }, 30*time.Second, 20*time.Millisecond,
				"the acked message leaves the stream")
		})
	}

	t.Run("LegacyLimitsStreamKeptWithWarning", func(t *testing.T) {
		t.Parallel()
		js := natstest.New(t, nil).JetStream(t)
		old, err := bus.StreamConfig(bus.StreamCommands, bus.StreamsConfig{})
		require.NoError(t, err)
		old.Retention = jetstream.LimitsPolicy
		_, err = js.CreateStream(t.Context(), old)
		require.NoError(t, err)
		_, err = js.Publish(t.Context(), "saga.cmd.payment.Charge", []byte("{}"))
		require.NoError(t, err)

		var logs syncBuffer
		log := slog.New(slog.NewTextHandler(&logs, nil))
		require.NoError(t, bus.EnsureStreams(t.Context(), js, bus.StreamsConfig{Duplicates: 5 * time.Minute, Logger: log}))
		s, err := js.Stream(t.Context(), bus.StreamCommands)
		require.NoError(t, err)
		cfg := s.CachedInfo().Config
		require.Equal(t, jetstream.LimitsPolicy, cfg.Retention, "never changed or deleted behind the operator's back")
		require.Equal(t, 5*time.Minute, cfg.Duplicates, "the other settings are applied")
		require.Equal(t, uint64(1), s.CachedInfo().State.Msgs, "no message lost")
		require.Contains(t, logs.String(), "stream retention cannot be changed in place")
		require.Contains(t, logs.String(), "nats stream rm SAGA_COMMANDS")
		require.NotContains(t, logs.String(), bus.StreamReplies, "only the legacy stream is reported")
	})
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
