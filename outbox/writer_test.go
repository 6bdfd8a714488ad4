package outbox_test

import (
	"database/sql"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/dbtest"
	"github.com/sagaflow/sagaflow/internal/natstest"
	"github.com/sagaflow/sagaflow/internal/sqldb"
	"github.com/sagaflow/sagaflow/outbox"
)

// TestWriteRefusesBadInput is "Must show" 6: an oversized message, an invalid subject and a closed
// transaction each give a clear error, and nothing of the call is written.
func TestWriteRefusesBadInput(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
		require.NoError(t, outbox.Migrate(t.Context(), db))
		w := outbox.NewWriter(db, &outbox.WriterConfig{MaxPayload: 1024})
		count := func() int {
			var n int
			require.NoError(t, db.Get(&n, `SELECT count(*) FROM sagaflow_outbox`))
			return n
		}
		// writeCommitted writes msgs and tries to commit whatever Write left in the transaction
		// (PostgreSQL refuses to commit a transaction in which a statement failed).
		writeCommitted := func(subject string, msgs ...*message.Message) error {
			tx, err := db.BeginTxx(t.Context(), nil)
			if err != nil {
				return err
			}
			werr := w.Write(t.Context(), tx, subject, msgs...)
			if cerr := tx.Commit(); werr == nil {
				return cerr
			}
			return werr
		}

		t.Run("Oversized", func(t *testing.T) {
			good := message.NewMessage("", []byte("small"))
			big := message.NewMessage("big-1", make([]byte, 1024))
			err := writeCommitted("events.a.b", good, big)
			require.ErrorIs(t, err, outbox.ErrInvalidMessage)
			var tooLarge *outbox.TooLargeError
			require.ErrorAs(t, err, &tooLarge)
			require.Equal(t, 1024, tooLarge.Limit)
			require.Contains(t, err.Error(), "big-1")
			require.Contains(t, err.Error(), "limit of 1024 bytes")
			require.Zero(t, count(), "nothing of the call is written")
		})

		t.Run("InvalidSubject", func(t *testing.T) {
			for _, subject := range []string{"", "events.a b", "events..b", "events.*", "events.>", "events.a\n"} {
				err := writeCommitted(subject, message.NewMessage("", []byte("x")))
				require.ErrorIs(t, err, outbox.ErrInvalidMessage, "subject %q", subject)
				require.Contains(t, err.Error(), "subject", "subject %q", subject)
			}
			// A bad subject in one envelope rejects the whole call.
			tx, err := db.BeginTxx(t.Context(), nil)
			require.NoError(t, err)
			err = w.WriteAll(t.Context(), tx, []outbox.Envelope{
				{Subject: "events.ok", Message: message.NewMessage("", nil)},
				{Subject: "bad subject", Message: message.NewMessage("bad-1", []byte("x"))},
			})
			require.ErrorIs(t, err, outbox.ErrInvalidMessage)
			require.ErrorContains(t, err, "bad-1")
			require.NoError(t, tx.Commit())
			require.Zero(t, count())
		})

		t.Run("PerMessageSubjects", func(t *testing.T) {
			require.NoError(t, sqldb.InTx(t.Context(), db, func(tx *sqlx.Tx) error {
				return w.WriteAll(t.Context(), tx, []outbox.Envelope{
					{Subject: "events.a.one", Message: message.NewMessage("env-1", nil)},
					{Subject: "events.b.two", Message: message.NewMessage("env-2", nil)},
					{Subject: "events.a.one", Message: message.NewMessage("env-3", nil)},
				})
			}))
			var rows []struct {
				ID      string `db:"message_id"`
				Subject string `db:"subject"`
			}
			require.NoError(t, db.Select(&rows, `SELECT message_id, subject FROM sagaflow_outbox ORDER BY message_id`))
			require.Len(t, rows, 3)
			require.Equal(t, []string{"env-1 events.a.one", "env-2 events.b.two", "env-3 events.a.one"},
				[]string{rows[0].ID + " " + rows[0].Subject, rows[1].ID + " " + rows[1].Subject, rows[2].ID + " " + rows[2].Subject})
			_, err := db.Exec(`DELETE FROM sagaflow_outbox`)
			require.NoError(t, err)
		})

		t.Run("NilMessage", func(t *testing.T) {
			require.ErrorIs(t, writeCommitted("events.a", message.NewMessage("", nil), nil), outbox.ErrInvalidMessage)
			require.Zero(t, count())
		})

		t.Run("ClosedTransaction", func(t *testing.T) {
			tx, err := db.BeginTxx(t.Context(), nil)
			require.NoError(t, err)
			require.NoError(t, tx.Rollback())
			err = w.Write(t.Context(), tx, "events.a.b", message.NewMessage("", []byte("x")))
			require.ErrorIs(t, err, sql.ErrTxDone)
			require.Contains(t, err.Error(), "outbox: write")
			// A plain *sql.Tx is accepted as well.
			stx, err := db.BeginTx(t.Context(), nil)
			require.NoError(t, err)
			require.NoError(t, stx.Commit())
			require.ErrorIs(t, w.Write(t.Context(), stx, "events.a.b", message.NewMessage("", nil)), sql.ErrTxDone)
			require.Zero(t, count())
		})

		t.Run("DuplicateMessageID", func(t *testing.T) {
			require.NoError(t, writeCommitted("events.a", message.NewMessage("same-id", nil)))
			err := writeCommitted("events.a", message.NewMessage("same-id", nil))
			require.Error(t, err)
			require.True(t, sqldb.IsUniqueViolation(err), "got %v", err)
			require.Equal(t, 1, count())
		})
	})
}

// TestRelayQuarantinesUnpublishableRows: a row NATS refuses (an invalid subject written by hand,
// a payload over the server's max_payload) is tried MaxAttempts times, quarantined with its
// error and reported, and the rows behind it are published.
func TestRelayQuarantinesUnpublishableRows(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
		b := setup(t, db, &natstest.Opts{MaxPayload: 8 * 1024})
		// An outbox written before validation existed, or by hand:
		_, err := db.Exec(db.Rebind(`INSERT INTO sagaflow_outbox (message_id, subject, headers, payload, ordering_key) VALUES (?, ?, '{}', ?, ?)`),
			"bad-subject", "events.bad subject", []byte("x"), "k1")
		require.NoError(t, err)
		// Accepted by a writer configured above the server's limit:
		big := outbox.WithOrderingKey(message.NewMessage("too-big", make([]byte, 16*1024)), "k2")
		after := outbox.WithOrderingKey(message.NewMessage("after-bad", []byte("ok")), "k1")
		b.write(t, "events.q.x", big, after, message.NewMessage("plain", []byte("ok")))

		r := startRelay(t, db, b.js, outbox.RelayConfig{MaxAttempts: 3})
		got := readStream(t, b.js, bus.StreamEvents, "events.>", 2)
		ids := []string{got[0].id, got[1].id}
		require.ElementsMatch(t, []string{"after-bad", "plain"}, ids)
		waitFor(t, "two quarantined rows", func() bool {
			st, err := r.Stats(t.Context())
			return err == nil && st.Quarantined == 2 && st.Backlog == 0
		})
		st, err := r.Stats(t.Context())
		require.NoError(t, err)
		require.Equal(t, int64(2), st.QuarantinedByRelay)
		var rows []struct {
			ID       string `db:"message_id"`
			Attempts int    `db:"attempts"`
			Err      string `db:"last_error"`
		}
		require.NoError(t, db.Select(&rows, `SELECT message_id, attempts, last_error FROM sagaflow_outbox WHERE quarantined_at IS NOT NULL ORDER BY message_id`))
		require.Len(t, rows, 2)
		require.Equal(t, "bad-subject", rows[0].ID)
		require.Equal(t, 3, rows[0].Attempts)
		require.Contains(t, rows[0].Err, "invalid subject")
		require.Equal(t, "too-big", rows[1].ID)
		require.True(t, strings.Contains(rows[1].Err, "maximum payload"), rows[1].Err)
	})
}
