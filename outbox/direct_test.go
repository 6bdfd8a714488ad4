package outbox_test

import (
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/dbtest"
	"github.com/sagaflow/sagaflow/internal/sqldb"
	"github.com/sagaflow/sagaflow/outbox"
)

// TestRelayCommitted: messages handed to Committed after their transaction commits are published
// from memory and their rows deleted, while the claim (with a ClaimDelay far in the future) never
// touches them; rows nobody hands over are claimed once older than ClaimDelay.
func TestRelayCommitted(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
		t.Run("PublishedFromMemoryAndDeleted", func(t *testing.T) {
			b := setup(t, db, nil)
			r := startRelay(t, db, b.js, outbox.RelayConfig{ClaimDelay: time.Hour})
			m1 := message.NewMessage("", []byte(`{"n":1}`))
			m1.Metadata.Set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
			m2 := message.NewMessage("", []byte(`{"n":2}`))
			envs := []outbox.Envelope{{Subject: "events.order.placed", Message: m1}, {Subject: "events.order.shipped", Message: m2}}
			require.NoError(t, sqldb.InTx(t.Context(), db, func(tx *sqlx.Tx) error { return b.writer.WriteAll(t.Context(), tx, envs) }))
			r.CommittedAll(envs)

			got := readStream(t, b.js, bus.StreamEvents, "events.>", 2)
			require.Equal(t, m1.UUID, got[0].id)
			require.Equal(t, "events.order.placed", got[0].subject)
			require.Equal(t, []string{"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}, got[0].headers["traceparent"])
			require.Equal(t, m2.UUID, got[1].id)
			require.Equal(t, "events.order.shipped", got[1].subject)
			for k := range got[1].headers {
				require.NotContains(t, k, "_sagaflow_", "local metadata sent as a header")
			}
			waitRows(t, db, 0) // deleted once acknowledged; the claim (ClaimDelay 1h) could not have
			st, err := r.Stats(t.Context())
			require.NoError(t, err)
			require.Equal(t, int64(2), st.Published)
		})

		t.Run("LeftToTheClaimAfterClaimDelay", func(t *testing.T) {
			b := setup(t, db, nil)
			r := startRelay(t, db, b.js, outbox.RelayConfig{ClaimDelay: 300 * time.Millisecond, PollInterval: 50 * time.Millisecond})
			m := message.NewMessage("", []byte(`{"n":3}`))
			b.write(t, "events.order.placed", m) // no Committed: as if the writer crashed after its commit
			got := readStream(t, b.js, bus.StreamEvents, "events.>", 1)
			require.Equal(t, m.UUID, got[0].id)
			waitRows(t, db, 0)
			// The relay counts a batch just after its transaction commits: wait for it.
			require.Eventually(t, func() bool {
				st, err := r.Stats(t.Context())
				return err == nil && st.Published >= 1
			}, time.Minute, 20*time.Millisecond)
			st, err := r.Stats(t.Context())
			require.NoError(t, err)
			require.Equal(t, int64(1), st.Published)
		})

		t.Run("ClaimLeavesYoungRows", func(t *testing.T) {
			b := setup(t, db, nil)
			young := message.NewMessage("", []byte(`{"n":4}`))
			old := message.NewMessage("", []byte(`{"n":5}`))
			b.write(t, "events.order.placed", young, old)
			backdate := `UPDATE sagaflow_outbox SET created_at = created_at - 7200000 WHERE message_id = ?` // SQLite: ms
			if db.DriverName() == "postgres" {
				backdate = `UPDATE sagaflow_outbox SET created_at = created_at - interval '2 hours' WHERE message_id = ?`
			}
			_, err := db.ExecContext(t.Context(), db.Rebind(backdate), old.UUID)
			require.NoError(t, err)
			r := startRelay(t, db, b.js, outbox.RelayConfig{ClaimDelay: time.Hour})
			r.Wake()
			// The claim that published the old row saw the young one too, and left it.
			got := readStream(t, b.js, bus.StreamEvents, "events.>", 1)
			require.Equal(t, old.UUID, got[0].id)
			waitRows(t, db, 1)
			var left string
			require.NoError(t, db.GetContext(t.Context(), &left, `SELECT message_id FROM sagaflow_outbox`))
			require.Equal(t, young.UUID, left, "a row younger than ClaimDelay is left to the process that wrote it")
		})
	})
}

// waitRows waits until the outbox holds want rows.
func waitRows(t *testing.T, db *sqlx.DB, want int) {
	t.Helper()
	require.Eventually(t, func() bool {
		var n int
		return db.GetContext(t.Context(), &n, `SELECT count(*) FROM sagaflow_outbox`) == nil && n == want
	}, time.Minute, 10*time.Millisecond)
}
