package bus_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/natstest"
)

func setup(t *testing.T) (jetstream.JetStream, *bus.Publisher) {
	t.Helper()
	js := natstest.New(t, nil).JetStream(t)
	require.NoError(t, bus.EnsureStreams(t.Context(), js, bus.StreamsConfig{}))
	pub, err := bus.NewPublisher(js, bus.PublisherConfig{MaxPending: 64})
	require.NoError(t, err)
	return js, pub
}

func streamMsgs(t *testing.T, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	s, err := js.Stream(t.Context(), stream)
	require.NoError(t, err)
	return s.CachedInfo().State.Msgs
}

func TestEnsureStreams(t *testing.T) {
	t.Parallel()
	js := natstest.New(t, nil).JetStream(t)
	ctx := t.Context()
	require.NoError(t, bus.EnsureStreams(ctx, js, bus.StreamsConfig{}))
	require.NoError(t, bus.EnsureStreams(ctx, js, bus.StreamsConfig{}), "idempotent")
	require.NoError(t, bus.EnsureStreams(ctx, js, bus.StreamsConfig{Duplicates: 10 * time.Minute}), "updates")
	for _, name := range []string{bus.StreamCommands, bus.StreamReplies, bus.StreamEvents, bus.StreamDLQ} {
		s, err := js.Stream(ctx, name)
		require.NoError(t, err, name)
		cfg := s.CachedInfo().Config
		require.Equal(t, jetstream.FileStorage, cfg.Storage, name)
		require.Equal(t, 10*time.Minute, cfg.Duplicates, name)
		require.Equal(t, 1, cfg.Replicas, name)
	}
	err := bus.EnsureStreams(ctx, js, bus.StreamsConfig{Replicas: 7, Duplicates: time.Millisecond})
	require.ErrorContains(t, err, "Replicas 7")
	require.ErrorContains(t, err, "Duplicates 1ms")
}

func TestPublisher(t *testing.T) {
	t.Parallel()
	t.Run("PipelinesBatchAndDedups", func(t *testing.T) {
		t.Parallel()
		js, pub := setup(t)
		msgs := make([]*message.Message, 500)
		for i := range msgs {
			msgs[i] = message.NewMessage(fmt.Sprintf("id-%d", i), []byte("x"))
			msgs[i].Metadata.Set("traceparent", "tp")
			msgs[i].Metadata.Set("_sagaflow_local", "not sent")
		}
		msgs[7].Metadata.Set(bus.SubjectKey, "events.other.y") // as on a received message: never read
		require.NoError(t, pub.Publish("events.a.x", msgs...))
		require.Equal(t, uint64(500), streamMsgs(t, js, bus.StreamEvents))
		require.NoError(t, pub.Publish("events.a.x", msgs...), "a re-publish is acknowledged")
		require.Equal(t, uint64(500), streamMsgs(t, js, bus.StreamEvents), "and dropped as a duplicate")

		s, err := js.Stream(t.Context(), bus.StreamEvents)
		require.NoError(t, err)
		raw, err := s.GetMsg(t.Context(), 8)
		require.NoError(t, err)
		require.Equal(t, "events.a.x", raw.Subject, "every message goes to the topic")
		require.Equal(t, "events.a.x:id-7", raw.Header.Get("Nats-Msg-Id"), "bus.MsgID")
		require.Equal(t, "tp", raw.Header.Get("traceparent"))
		require.Empty(t, raw.Header.Get("_sagaflow_local"))
		require.Empty(t, raw.Header.Get(bus.SubjectKey))
	})

	t.Run("NamesFailedMessages", func(t *testing.T) {
		t.Parallel()
		_, pub := setup(t)
		bad := message.NewMessage("bad-1", []byte("x"))
		bad.Metadata.Set("Huge", strings.Repeat("h", 70_000)) // over NATS's 64 KiB header limit
		err := pub.Publish("events.a.x", message.NewMessage("good-1", nil), bad, message.NewMessage("good-2", nil))
		var pe *bus.PublishError
		require.ErrorAs(t, err, &pe)
		require.Len(t, pe.Failures, 1)
		require.Equal(t, 1, pe.Failures[0].Index)
		require.Equal(t, "bad-1", pe.Failures[0].UUID)
		require.ErrorContains(t, err, "bad-1")
		require.True(t, bus.IsPermanentPublishError(pe.Failures[0].Err))

		// A subject no stream captures, JetStream answering: permanent (TestPublisherNoStream).
		err = pub.Publish("nostream.x", message.NewMessage("n-2", nil))
		require.ErrorAs(t, err, &pe)
		require.True(t, bus.IsPermanentPublishError(pe.Failures[0].Err), "%v", err)

		require.NoError(t, pub.Close())
		require.NoError(t, pub.Close())
		require.ErrorIs(t, pub.Publish("events.a.x", message.NewMessage("late", nil)), bus.ErrClosed)
	})

	t.Run("PublishBatch", func(t *testing.T) {
		t.Parallel()
		js, pub := setup(t)
		err := pub.PublishBatch(t.Context(), []bus.Message{
			{Subject: "events.b.x", ID: "b-0", Headers: map[string]string{"Order-Id": "7"}, Payload: []byte("p")},
			{Subject: "events.b x", ID: "b-1"},
			{Subject: "events.b.y", ID: "b-2"},
		})
		var pe *bus.PublishError
		require.ErrorAs(t, err, &pe)
		require.Len(t, pe.Failures, 1)
		require.Equal(t, 1, pe.Failures[0].Index)
		require.Equal(t, "events.b x", pe.Failures[0].Subject)
		require.Equal(t, uint64(2), streamMsgs(t, js, bus.StreamEvents), "the others are stored")
		s, err := js.Stream(t.Context(), bus.StreamEvents)
		require.NoError(t, err)
		raw, err := s.GetMsg(t.Context(), 1)
		require.NoError(t, err)
		require.Equal(t, "events.b.x", raw.Subject)
		require.Equal(t, "7", raw.Header.Get("Order-Id"), "headers keep their case")
		require.Equal(t, "events.b.x:b-0", raw.Header.Get("Nats-Msg-Id"))
		require.Equal(t, "p", string(raw.Data))

		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		err = pub.PublishBatch(ctx, []bus.Message{{Subject: "events.b.z", ID: "c-0"}, {Subject: "events.b.z", ID: "c-1"}})
		require.ErrorAs(t, err, &pe)
		require.Len(t, pe.Failures, 2)
		require.ErrorIs(t, err, context.Canceled)
		require.Equal(t, uint64(2), streamMsgs(t, js, bus.StreamEvents), "nothing sent after ctx ended")
	})
}

func TestPublisherForward(t *testing.T) {
	t.Parallel()
	js, pub := setup(t)
	sub, err := bus.NewSubscriber(js, bus.SubscriberConfig{Stream: bus.StreamEvents, Durable: "fwd", FilterSubjects: []string{"events.fwd.>"}})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, sub.Close()) })

	require.NoError(t, pub.Publish("events.fwd.a", message.NewMessage("f-1", []byte("a"))))
	require.NoError(t, pub.Publish("events.fwd.a", message.NewMessage("f-1", []byte("a"))), "a re-publish is acknowledged")
	require.Equal(t, uint64(1), streamMsgs(t, js, bus.StreamEvents), "and dropped: same id, same subject")
	require.NoError(t, pub.Publish("events.fwd.b", message.NewMessage("f-1", []byte("b"))))
	require.Equal(t, uint64(2), streamMsgs(t, js, bus.StreamEvents), "the same UUID forwarded to another subject is stored")
	// Other clients set Nats-Msg-Id to the bare message id (the README's contract).
	_, err = js.PublishMsg(t.Context(), &nats.Msg{Subject: "events.fwd.c", Data: []byte("c"), Header: nats.Header{nats.MsgIdHdr: {"foreign-1"}}})
	require.NoError(t, err)
	_, err = js.PublishMsg(t.Context(), &nats.Msg{Subject: "events.fwd.d", Data: []byte("d"), Header: nats.Header{nats.MsgIdHdr: {"events.fwd.c:x"}}})
	require.NoError(t, err)

	ch, err := sub.Subscribe(t.Context(), "events.fwd.>")
	require.NoError(t, err)
	got := map[string]string{}
	for range 4 {
		m := receive(t, ch)
		got[m.Metadata.Get(bus.SubjectKey)] = m.UUID + "/" + string(m.Payload)
		m.Ack()
	}
	require.Equal(t, map[string]string{
		"events.fwd.a": "f-1/a",
		"events.fwd.b": "f-1/b",
		"events.fwd.c": "foreign-1/c",
		"events.fwd.d": "events.fwd.c:x/d", // only its own subject is stripped
	}, got)
}

func TestSubscriber(t *testing.T) {
	t.Parallel()
	js, pub := setup(t)
	sub, err := bus.NewSubscriber(js, bus.SubscriberConfig{Stream: bus.StreamEvents, Durable: "svc", FilterSubjects: []string{"events.sub.>"}, MaxDeliver: 3})
	require.NoError(t, err)
	ch, err := sub.Subscribe(t.Context(), "events.sub.>")
	require.NoError(t, err)
	m := message.NewMessage("m-1", []byte("hello"))
	m.Metadata.Set("ce-type", "order.placed")
	require.NoError(t, pub.Publish("events.sub.x", m))

	got := <-ch
	require.Equal(t, "m-1", got.UUID)
	require.Equal(t, "hello", string(got.Payload))
	require.Equal(t, "order.placed", got.Metadata.Get("ce-type"))
	require.Equal(t, "events.sub.x", got.Metadata.Get(bus.SubjectKey))
	require.Equal(t, "1", got.Metadata.Get(bus.DeliveryKey))
	got.Nack()
	again := <-ch
	require.Equal(t, "m-1", again.UUID)
	require.Equal(t, "2", again.Metadata.Get(bus.DeliveryKey), "redelivered after Nack")
	again.Ack()

	require.NoError(t, sub.Close())
	require.NoError(t, sub.Close())
	_, ok := <-ch
	require.False(t, ok, "channel closed by Close")
	c, err := js.Consumer(t.Context(), bus.StreamEvents, "svc")
	require.NoError(t, err, "the durable consumer survives Close")
	require.Eventually(t, func() bool {
		info, err := c.Info(context.Background())
		return err == nil && info.NumAckPending == 0 && info.AckFloor.Consumer >= 2
	}, 10*time.Second, 20*time.Millisecond, "the second delivery was acknowledged")

	_, err = bus.NewSubscriber(js, bus.SubscriberConfig{Durable: "a.b"})
	require.ErrorContains(t, err, "Stream: required")
	require.ErrorContains(t, err, `Durable "a.b"`)
}

func TestDeadLetterPermanentError(t *testing.T) {
	t.Parallel()
	js, pub := setup(t)
	sub, err := bus.NewSubscriber(js, bus.SubscriberConfig{Stream: bus.StreamCommands, Durable: "payment", MaxDeliver: 5})
	require.NoError(t, err)
	router, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	require.NoError(t, err)
	router.AddConsumerHandler("payment", "saga.cmd.payment.>", sub, func(msg *message.Message) error {
		return fmt.Errorf("decode command: %w", bus.ErrPermanent)
	}).AddMiddleware(bus.DeadLetter(pub, "", 5, nil))
	done := make(chan error, 1)
	go func() { done <- router.Run(context.Background()) }()
	t.Cleanup(func() { require.NoError(t, router.Close()); require.NoError(t, <-done) })
	<-router.Running()

	require.NoError(t, pub.Publish("saga.cmd.payment.Charge", message.NewMessage("c-1", []byte("{"))))
	require.Eventually(t, func() bool { return streamMsgs(t, js, bus.StreamDLQ) == 1 }, 10*time.Second, 20*time.Millisecond)
	s, err := js.Stream(t.Context(), bus.StreamDLQ)
	require.NoError(t, err)
	raw, err := s.GetMsg(t.Context(), 1)
	require.NoError(t, err)
	require.Equal(t, "saga.dlq.saga.cmd.payment.Charge", raw.Subject)
	require.Equal(t, "1", raw.Header.Get(bus.HeaderDLQDeliveries), "permanent: dead-lettered on the first delivery")
	require.Contains(t, raw.Header.Get(bus.HeaderDLQReason), "decode command")
}

// TestPublisherNoStream: a subject no stream captures is a permanent failure of that message, but
// "no stream" for one of Sagaflow's own subjects, or while JetStream is unavailable, is an outage.
func TestPublisherNoStream(t *testing.T) {
	t.Parallel()
	publish := func(t *testing.T, pub *bus.Publisher, subject string) error {
		t.Helper()
		err := pub.Publish(subject, message.NewMessage(watermill.NewUUID(), []byte("x")))
		var pe *bus.PublishError
		require.ErrorAs(t, err, &pe)
		require.Len(t, pe.Failures, 1)
		return err
	}
	t.Run("ForeignSubjectIsPermanent", func(t *testing.T) {
		t.Parallel()
		js, pub := setup(t)
		err := publish(t, pub, "x.y.z")
		var ns *bus.NoStreamError
		require.ErrorAs(t, err, &ns)
		require.Equal(t, "x.y.z", ns.Subject)
		require.ErrorIs(t, err, jetstream.ErrNoStreamResponse)
		require.True(t, bus.IsPermanentPublishError(err))
		// A stream created for the subject afterwards takes it (after the lookup cache expires).
		_, err = js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "XYZ", Subjects: []string{"x.>"}})
		require.NoError(t, err)
		deadline := time.Now().Add(time.Minute)
		for pub.Publish("x.y.z", message.NewMessage(watermill.NewUUID(), []byte("x"))) != nil {
			require.True(t, time.Now().Before(deadline), "the new stream never took x.y.z")
			time.Sleep(100 * time.Millisecond)
		}
	})
	t.Run("OwnStreamMissingIsAnOutage", func(t *testing.T) {
		t.Parallel()
		js, pub := setup(t)
		require.NoError(t, js.DeleteStream(t.Context(), bus.StreamReplies))
		err := publish(t, pub, "saga.reply.order")
		require.ErrorIs(t, err, jetstream.ErrNoStreamResponse)
		require.False(t, bus.IsPermanentPublishError(err))
	})
	t.Run("JetStreamUnavailableIsAnOutage", func(t *testing.T) {
		t.Parallel()
		js := natstest.New(t, &natstest.Opts{NoJetStream: true}).JetStream(t)
		pub, err := bus.NewPublisher(js, bus.PublisherConfig{AckTimeout: 5 * time.Second})
		require.NoError(t, err)
		err = publish(t, pub, "x.y.z")
		require.ErrorIs(t, err, jetstream.ErrNoStreamResponse)
		var ns *bus.NoStreamError
		require.False(t, errors.As(err, &ns))
		require.False(t, bus.IsPermanentPublishError(err))
	})
}
