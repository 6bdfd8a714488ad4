package outbox_test

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/dbtest"
	"github.com/sagaflow/sagaflow/internal/natstest"
	"github.com/sagaflow/sagaflow/internal/sqldb"
	"github.com/sagaflow/sagaflow/outbox"
)

// countingPublisher counts Publish calls, so a test can wait for the relay to have tried.
type countingPublisher struct {
	message.Publisher
	calls atomic.Int64
}

// decorate makes p wrap the relay's publisher (RelayConfig.PublisherDecorator).
func (p *countingPublisher) decorate(inner message.Publisher) (message.Publisher, error) {
	p.Publisher = inner
	return p, nil
}

func (p *countingPublisher) Publish(topic string, msgs ...*message.Message) error {
	p.calls.Add(1)
	return p.Publisher.Publish(topic, msgs...)
}

// quarantined is one quarantined row.
type quarantined struct {
	ID       string `db:"message_id"`
	Attempts int    `db:"attempts"`
	Err      string `db:"last_error"`
}

func quarantinedRows(t *testing.T, db *sqlx.DB) []quarantined {
	t.Helper()
	var rows []quarantined
	require.NoError(t, db.Select(&rows, `SELECT message_id, attempts, last_error FROM sagaflow_outbox WHERE quarantined_at IS NOT NULL ORDER BY message_id`))
	return rows
}

// TestRelayQuarantinesRowsNoStreamTakes: a row for a subject no stream captures (a participant
// replying to a forged reply-to "x.y.z") and a row whose headers break NATS's 64 KiB header limit
// are quarantined after MaxAttempts, while the relay goes on publishing the rows around them; a row
// for one of Sagaflow's own subjects whose stream is missing is an outage, never counted: the
// relay's publisher recreates the stream and the row goes out once.
func TestRelayQuarantinesRowsNoStreamTakes(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
		b := setup(t, db, nil)
		require.NoError(t, b.js.DeleteStream(t.Context(), bus.StreamCommands))
		hugeHeader := message.NewMessage("header-too-big", []byte(`{}`))
		hugeHeader.Metadata.Set("Sagaflow-Business-Key", strings.Repeat("k", 70_000))
		b.write(t, "x.y.z", message.NewMessage("forged-reply-to", []byte(`{}`)))
		b.write(t, "events.a.b", hugeHeader)
		b.write(t, "events.a.b", message.NewMessage("before-ok", []byte(`{}`)))
		b.write(t, "saga.cmd.svc.Do", message.NewMessage("own-stream-missing", []byte(`{}`)))

		pub := &countingPublisher{}
		r := startRelay(t, db, b.js, outbox.RelayConfig{MaxAttempts: 3, MaxBackoff: 100 * time.Millisecond, PublisherDecorator: pub.decorate})
		waitFor(t, "two quarantined rows", func() bool {
			st, err := r.Stats(t.Context())
			return err == nil && st.Quarantined == 2
		})
		rows := quarantinedRows(t, db)
		require.Len(t, rows, 2)
		require.Equal(t, "forged-reply-to", rows[0].ID)
		require.Equal(t, 3, rows[0].Attempts)
		require.Contains(t, rows[0].Err, "no stream captures subject x.y.z")
		require.Equal(t, "header-too-big", rows[1].ID)
		require.Equal(t, 3, rows[1].Attempts)
		require.Contains(t, rows[1].Err, "header size exceeds maximum")

		// The relay keeps publishing: the good row went out, and so does one written now.
		b.write(t, "events.a.b", message.NewMessage("after-ok", []byte(`{}`)))
		r.Wake()
		got := readStream(t, b.js, bus.StreamEvents, "events.>", 2)
		require.ElementsMatch(t, []string{"before-ok", "after-ok"}, []string{got[0].id, got[1].id})

		// The command row was never counted against (it is not among the two quarantined rows): the
		// relay's publisher recreated the missing Sagaflow stream, and the row went out once.
		got = readStream(t, b.js, bus.StreamCommands, "saga.cmd.>", 1)
		require.Equal(t, "own-stream-missing", got[0].id)
		waitDrained(t, r)
		require.Len(t, quarantinedRows(t, db), 2)
	})
}

// TestRelayJetStreamUnavailableNeverQuarantines: while JetStream does not answer (NATS is up, no
// responders for streams or the JetStream API), a row for a subject no stream captures is retried
// without counting an attempt; it is quarantined only once JetStream answers "no stream matches".
func TestRelayJetStreamUnavailableNeverQuarantines(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
		require.NoError(t, outbox.Migrate(t.Context(), db))
		srv := natstest.New(t, &natstest.Opts{NoJetStream: true})
		w := outbox.NewWriter(db, nil)
		require.NoError(t, sqldb.InTx(t.Context(), db, func(tx *sqlx.Tx) error {
			return w.Write(t.Context(), tx, "x.y.z", message.NewMessage("no-jetstream", []byte(`{}`)))
		}))
		pub := &countingPublisher{}
		r := startRelay(t, db, srv.JetStream(t), outbox.RelayConfig{MaxAttempts: 2, MaxBackoff: 50 * time.Millisecond, PublisherDecorator: pub.decorate})
		waitFor(t, "ten publish attempts", func() bool { return pub.calls.Load() >= 10 })
		st, err := r.Stats(t.Context())
		require.NoError(t, err)
		require.Zero(t, st.Quarantined)
		require.Equal(t, int64(1), st.Backlog)
		var attempts int
		require.NoError(t, db.Get(&attempts, `SELECT attempts FROM sagaflow_outbox`))
		require.Zero(t, attempts, "an unavailable JetStream is an outage, not the message's fault")
	})
}
