package outbox_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/internal/dbtest"
	"github.com/sagaflow/sagaflow/internal/sqldb"
	"github.com/sagaflow/sagaflow/outbox"
)

// TestInboxPruneBatches: Prune deletes every old row of its consumer however many batches that
// takes, and keeps young rows and other consumers' rows.
func TestInboxPruneBatches(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
		require.NoError(t, outbox.Migrate(t.Context(), db))
		old := `CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) - 7200000`
		if sqldb.DialectOf(db) == sqldb.Postgres {
			old = `now() - interval '2 hours'`
		}
		const n = 1203
		var b strings.Builder
		b.WriteString(`INSERT INTO sagaflow_inbox (consumer, message_id, processed_at) VALUES `)
		for i := range n {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "('pruned', 'old-%d', %s)", i, old)
		}
		fmt.Fprintf(&b, ", ('other', 'old-0', %s)", old)
		_, err := db.Exec(b.String())
		require.NoError(t, err)
		inbox := outbox.NewInbox(db, "pruned")
		require.NoError(t, sqldb.InTx(t.Context(), db, func(tx *sqlx.Tx) error {
			_, err := inbox.Record(t.Context(), tx, "young")
			return err
		}))

		deleted, err := inbox.Prune(t.Context(), db, time.Hour)
		require.NoError(t, err)
		require.Equal(t, int64(n), deleted)
		var left []string
		require.NoError(t, db.Select(&left, `SELECT consumer || '/' || message_id FROM sagaflow_inbox ORDER BY consumer`))
		require.Equal(t, []string{"other/old-0", "pruned/young"}, left)
	})
}
