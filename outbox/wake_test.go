package outbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/dbtest"
	"github.com/sagaflow/sagaflow/internal/pgtest"
	"github.com/sagaflow/sagaflow/internal/sqldb"
	"github.com/sagaflow/sagaflow/internal/sqlitetest"
	"github.com/sagaflow/sagaflow/outbox"
)

// TestRelayWakeUps: with a poll interval of an hour, a commit still reaches the bus at once — woken
// by LISTEN/NOTIFY on PostgreSQL (from another connection's commit, by a writer that asks for it)
// and by Wake on SQLite.
func TestRelayWakeUps(t *testing.T) {
	t.Parallel()
	const never = time.Hour
	published := func(t *testing.T, r *outbox.Relay, n int64) {
		t.Helper()
		waitFor(t, "published messages", func() bool {
			st, err := r.Stats(t.Context())
			return err == nil && st.Published == n
		})
	}

	t.Run("PostgresNotify", func(t *testing.T) {
		t.Parallel()
		dsn := pgtest.SchemaDSN(t)
		db, err := sqldb.Open(t.Context(), dsn)
		require.NoError(t, err)
		t.Cleanup(func() { _ = db.Close() })
		b := setup(t, db, nil)
		var triggers int
		require.NoError(t, db.GetContext(t.Context(), &triggers, `SELECT COUNT(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
			WHERE t.tgname = 'sagaflow_outbox_notify' AND c.relnamespace = current_schema()::regnamespace`))
		require.Zero(t, triggers, "commits send no NOTIFY of their own")
		b.writer = outbox.NewWriter(db, &outbox.WriterConfig{Notify: true})
		b.write(t, "events.wake.a", message.NewMessage("", nil))
		r := startRelay(t, db, b.js, outbox.RelayConfig{PollInterval: never, ListenDSN: dsn, Workers: 1})
		published(t, r, 1) // the first cycle at start; the relay now waits
		b.write(t, "events.wake.b", message.NewMessage("", nil))
		published(t, r, 2)
		readStream(t, b.js, bus.StreamEvents, "events.wake.>", 2)
	})

	t.Run("SQLiteWake", func(t *testing.T) {
		t.Parallel()
		db := sqlitetest.New(t)
		b := setup(t, db, nil)
		b.write(t, "events.wake.a", message.NewMessage("", nil))
		r := startRelay(t, db, b.js, outbox.RelayConfig{PollInterval: never})
		published(t, r, 1)
		b.write(t, "events.wake.b", message.NewMessage("", nil))
		r.Wake()
		published(t, r, 2)
	})
}

// gatedPublisher holds every Publish until release is closed, and reports entering it.
type gatedPublisher struct {
	message.Publisher
	entered chan struct{}
	release chan struct{}
}

func (p *gatedPublisher) Publish(topic string, msgs ...*message.Message) error {
	select {
	case p.entered <- struct{}{}:
	default:
	}
	<-p.release
	return p.Publisher.Publish(topic, msgs...)
}

// TestRelayDrainsOnShutdown: a relay told to stop while a batch is in flight finishes it — the
// messages are acknowledged and their rows marked — before Run returns.
func TestRelayDrainsOnShutdown(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
		b := setup(t, db, nil)
		for range 3 {
			b.write(t, "events.drain.x", message.NewMessage("", []byte("d")))
		}
		gate := &gatedPublisher{entered: make(chan struct{}, 1), release: make(chan struct{})}
		r := outbox.NewRelay(db, b.js, &outbox.RelayConfig{Workers: 1, PollInterval: time.Hour,
			PublisherDecorator: func(p message.Publisher) (message.Publisher, error) {
				gate.Publisher = p
				return gate, nil
			}})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		<-gate.entered
		cancel()
		close(gate.release)
		require.NoError(t, <-done)
		st, err := r.Stats(t.Context())
		require.NoError(t, err)
		require.Zero(t, st.Backlog, "the claimed batch was marked before Run returned")
		require.Equal(t, int64(3), st.Published)
		readStream(t, b.js, bus.StreamEvents, "events.drain.>", 3)
	})
}
