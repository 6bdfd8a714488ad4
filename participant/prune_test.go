package participant

import (
	"fmt"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/internal/dbtest"
)

// TestPruneBarrier: a pass deletes the rows of the sagas whose every row is older than the
// retention, in batches, and keeps every row of a saga with a recent one (a step still being
// retried or compensated) and of recent sagas.
func TestPruneBarrier(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
		require.NoError(t, Migrate(t.Context(), db))
		ago := func(d time.Duration) string {
			if db.DriverName() == "postgres" {
				return fmt.Sprintf("now() - interval '%d seconds'", int64(d/time.Second))
			}
			return fmt.Sprintf("datetime('now', '-%d seconds')", int64(d/time.Second))
		}
		insert := func(sagaID, step, action, outcome string, age time.Duration) {
			t.Helper()
			_, err := db.Exec(db.Rebind(`INSERT INTO sagaflow_barrier (saga_id, step, action, outcome, created_at) VALUES (?, ?, ?, ?, `+ago(age)+`)`),
				sagaID, step, action, outcome)
			require.NoError(t, err)
		}
		const day = 24 * time.Hour
		// More old sagas than one batch holds rows.
		old := pruneBatch/2 + 10
		for i := range old {
			insert(fmt.Sprintf("old-%04d", i), "reserve", "forward", "success", 40*day)
			insert(fmt.Sprintf("old-%04d", i), "reserve", "compensate", "success", 39*day)
		}
		// A saga whose forward is old but whose compensation ran yesterday: its forward row must
		// stay, or a retried compensation would be taken for a null one.
		insert("active", "reserve", "forward", "success", 40*day)
		insert("active", "reserve", "compensate", "success", day)
		// A tombstone written an hour ago refuses a hanging forward.
		insert("tombstone", "reserve", "compensate", "success", time.Hour)
		insert("recent", "reserve", "forward", "success", time.Minute)

		n, err := newBarrierPruner(db, 30*day).pruneOnce(t.Context())
		require.NoError(t, err)
		require.Equal(t, int64(2*old), n)
		var left []string
		require.NoError(t, db.Select(&left, `SELECT saga_id || ' ' || action FROM sagaflow_barrier ORDER BY saga_id, action`))
		require.Equal(t, []string{"active compensate", "active forward", "recent forward", "tombstone compensate"}, left)

		n, err = newBarrierPruner(db, 30*day).pruneOnce(t.Context())
		require.NoError(t, err)
		require.Zero(t, n)
	})
}

func TestBarrierRetentionConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		retention time.Duration
		ok        bool
	}{
		{"Default", 0, true},
		{"Week", 7 * 24 * time.Hour, true},
		{"Forever", -1, true},
		{"TooShort", time.Minute, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := Config{Service: "svc", BarrierRetention: tt.retention}.withDefaults().validate()
			if tt.ok {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, "BarrierRetention")
		})
	}
}
