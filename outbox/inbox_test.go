package outbox_test

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/dbtest"
	"github.com/sagaflow/sagaflow/internal/natstest"
	"github.com/sagaflow/sagaflow/internal/sqldb"
	"github.com/sagaflow/sagaflow/outbox"
)

// runRouter runs a Watermill router with one consumer handler until the test ends.
func runRouter(t *testing.T, name, topic string, sub message.Subscriber, h message.NoPublishHandlerFunc, mw ...message.HandlerMiddleware) {
	t.Helper()
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 5 * time.Second}, watermill.NopLogger{})
	require.NoError(t, err)
	handler := router.AddConsumerHandler(name, topic, sub, h)
	handler.AddMiddleware(mw...)
	done := make(chan error, 1)
	go func() { done <- router.Run(context.Background()) }()
	t.Cleanup(func() {
		require.NoError(t, router.Close())
		require.NoError(t, <-done)
	})
	<-router.Running()
}

// TestInbox is "Must show" 5.
func TestInbox(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
		require.NoError(t, outbox.Migrate(t.Context(), db))
		_, err := db.Exec(`CREATE TABLE effects (message_id TEXT NOT NULL)`)
		require.NoError(t, err)
		srv := natstest.New(t, nil)
		js := srv.JetStream(t)
		const window = 200 * time.Millisecond
		require.NoError(t, bus.EnsureStreams(t.Context(), js, bus.StreamsConfig{Duplicates: window}))
		pub, err := bus.NewPublisher(js, bus.PublisherConfig{})
		require.NoError(t, err)

		t.Run("AppliesOnce", func(t *testing.T) {
			sub, err := bus.NewSubscriber(js, bus.SubscriberConfig{Stream: bus.StreamEvents, Durable: "once", FilterSubjects: []string{"events.inbox.once"}, MaxDeliver: 10, AckWait: 5 * time.Second})
			require.NoError(t, err)
			inbox := outbox.NewInbox(db, "once")
			var calls, effects atomic.Int32
			apply := inbox.Handler(db, func(ctx context.Context, tx *sqlx.Tx, msg *message.Message) error {
				effects.Add(1)
				_, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO effects (message_id) VALUES (?)`), msg.UUID)
				return err
			})
			// The effect commits on every delivery, but the first two "lose" their ack: the
			// message is delivered three times.
			runRouter(t, "once", "events.inbox.once", sub, func(msg *message.Message) error {
				n := calls.Add(1)
				if err := apply(msg); err != nil {
					return err
				}
				if n <= 2 {
					return errors.New("ack lost")
				}
				return nil
			})
			_, err = js.PublishMsg(t.Context(), &nats.Msg{Subject: "events.inbox.once", Data: []byte("x")}, jetstream.WithMsgID("msg-1"))
			require.NoError(t, err)
			waitFor(t, "three deliveries", func() bool { return calls.Load() == 3 })

			// Re-published after the duplicate window: JetStream stores it again.
			waitFor(t, "a re-publish past the duplicate window", func() bool {
				ack, err := js.PublishMsg(t.Context(), &nats.Msg{Subject: "events.inbox.once", Data: []byte("x")}, jetstream.WithMsgID("msg-1"))
				return err == nil && !ack.Duplicate
			})
			waitFor(t, "the fourth delivery", func() bool { return calls.Load() == 4 })
			waitConsumerSettled(t, js, "once")

			var applied int
			require.NoError(t, db.Get(&applied, db.Rebind(`SELECT count(*) FROM effects WHERE message_id = ?`), "msg-1"))
			require.Equal(t, 1, applied, "effect applied once")
			require.Equal(t, int32(1), effects.Load(), "handler function called once")
			require.NoError(t, sub.Close())
		})

		t.Run("DeadLettersAfterMaxDeliveries", func(t *testing.T) {
			const maxDeliver = 3
			sub, err := bus.NewSubscriber(js, bus.SubscriberConfig{Stream: bus.StreamEvents, Durable: "failing", FilterSubjects: []string{"events.inbox.failing"}, MaxDeliver: maxDeliver, AckWait: 5 * time.Second})
			require.NoError(t, err)
			inbox := outbox.NewInbox(db, "failing")
			var calls atomic.Int32
			runRouter(t, "failing", "events.inbox.failing", sub, inbox.Handler(db, func(ctx context.Context, tx *sqlx.Tx, msg *message.Message) error {
				calls.Add(1)
				return errors.New("payment service says no")
			}), bus.DeadLetter(pub, "", maxDeliver, nil))
			_, err = js.PublishMsg(t.Context(), &nats.Msg{Subject: "events.inbox.failing", Data: []byte("y"), Header: nats.Header{"traceparent": {"00-abc-def-01"}}}, jetstream.WithMsgID("msg-2"))
			require.NoError(t, err)

			dlq := readStream(t, js, bus.StreamDLQ, "saga.dlq.>", 1)
			require.Len(t, dlq, 1)
			require.Equal(t, "saga.dlq.events.inbox.failing", dlq[0].subject)
			require.Equal(t, "msg-2", dlq[0].id)
			require.Equal(t, "y", dlq[0].data)
			require.Equal(t, []string{"payment service says no"}, dlq[0].headers[bus.HeaderDLQReason])
			require.Equal(t, []string{"events.inbox.failing"}, dlq[0].headers[bus.HeaderDLQSubject])
			require.Equal(t, []string{strconv.Itoa(maxDeliver)}, dlq[0].headers[bus.HeaderDLQDeliveries])
			require.Equal(t, []string{"00-abc-def-01"}, dlq[0].headers["traceparent"])
			waitConsumerSettled(t, js, "failing")
			require.Equal(t, int32(maxDeliver), calls.Load())
			var recorded int
			require.NoError(t, db.Get(&recorded, db.Rebind(`SELECT count(*) FROM sagaflow_inbox WHERE consumer = ?`), "failing"))
			require.Zero(t, recorded, "a failed handler leaves no inbox row")
			require.NoError(t, sub.Close())
		})

		t.Run("Prune", func(t *testing.T) {
			inbox := outbox.NewInbox(db, "prune")
			require.NoError(t, sqldb.InTx(t.Context(), db, func(tx *sqlx.Tx) error {
				for _, id := range []string{"old", "new"} {
					first, err := inbox.Record(t.Context(), tx, id)
					require.NoError(t, err)
					require.True(t, first)
				}
				first, err := inbox.Record(t.Context(), tx, "old")
				require.NoError(t, err)
				require.False(t, first, "second record of the same id")
				return nil
			}))
			age := `UPDATE sagaflow_inbox SET processed_at = processed_at - 7200000 WHERE message_id = 'old'`
			if sqldb.DialectOf(db) == sqldb.Postgres {
				age = `UPDATE sagaflow_inbox SET processed_at = processed_at - interval '2 hours' WHERE message_id = 'old'`
			}
			_, err := db.Exec(age)
			require.NoError(t, err)
			n, err := inbox.Prune(t.Context(), db, time.Hour)
			require.NoError(t, err)
			require.Equal(t, int64(1), n)
			var left []string
			require.NoError(t, db.Select(&left, db.Rebind(`SELECT message_id FROM sagaflow_inbox WHERE consumer = ?`), "prune"))
			require.Equal(t, []string{"new"}, left)
			_, err = inbox.Prune(t.Context(), db, 0)
			require.Error(t, err)
		})
	})
}

// waitConsumerSettled waits until durable on EVENTS has nothing pending or unacknowledged.
func waitConsumerSettled(t *testing.T, js jetstream.JetStream, durable string) {
	t.Helper()
	waitFor(t, "consumer "+durable+" settled", func() bool {
		c, err := js.Consumer(t.Context(), bus.StreamEvents, durable)
		if err != nil {
			return false
		}
		info, err := c.Info(t.Context())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	})
}

// TestInboxRecordAll: a batch is recorded in one call; ids recorded by a committed transaction,
// by another consumer, or twice in the batch are told apart, and a rolled-back batch records nothing.
func TestInboxRecordAll(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
		ctx := t.Context()
		require.NoError(t, outbox.Migrate(ctx, db))
		inbox, other := outbox.NewInbox(db, "c1"), outbox.NewInbox(db, "c2")
		record := func(in *outbox.Inbox, commit bool, ids ...string) map[string]bool {
			t.Helper()
			tx, err := db.BeginTxx(ctx, nil)
			require.NoError(t, err)
			first, err := in.RecordAll(ctx, tx, ids)
			require.NoError(t, err)
			if commit {
				require.NoError(t, tx.Commit())
			} else {
				require.NoError(t, tx.Rollback())
			}
			return first
		}
		require.Equal(t, map[string]bool{"a": true, "b": true}, record(inbox, false, "a", "b"))
		require.Equal(t, map[string]bool{"a": true, "b": true}, record(inbox, true, "a", "b", "a"), "the rolled-back batch recorded nothing")
		many := make([]string, 0, 1200)
		for i := range 1200 { // more than one statement's worth
			many = append(many, "m"+strconv.Itoa(i))
		}
		first := record(inbox, true, append([]string{"a", "c"}, many...)...)
		require.Len(t, first, 1201)
		require.False(t, first["a"], "recorded before")
		require.True(t, first["c"])
		require.True(t, first["m1199"])
		require.Equal(t, map[string]bool{"a": true}, record(other, true, "a"), "inboxes of other consumers are separate")
		tx, err := db.BeginTxx(ctx, nil)
		require.NoError(t, err)
		defer func() { _ = tx.Rollback() }()
		_, err = inbox.RecordAll(ctx, tx, []string{"x", ""})
		require.Error(t, err, "an empty message id")
	})
}
