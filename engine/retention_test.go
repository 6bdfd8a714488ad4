package engine

import (
	"errors"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/internal/dbtest"
	"github.com/sagaflow/sagaflow/internal/pgtest"
	"github.com/sagaflow/sagaflow/internal/protocol"
	"github.com/sagaflow/sagaflow/saga"
)

// TestRetention: a retention pass deletes the completed and compensated sagas that finished more
// than Retention ago, with their history, in batches, and keeps every other saga; it prunes inbox
// rows older than InboxRetention only.
func TestRetention(t *testing.T) {
	t.Parallel()
	const timeout = time.Second
	dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
		c := newClock()
		e := newEngine(t, db, Config{
			Definitions: registry(t, orderDefinition(t, "order", timeout)), Now: c.Now, Rand: func() float64 { return 0.5 },
			Retention: 48 * time.Hour, RetentionBatch: 2,
		})
		start := func() string {
			id, err := e.Start(t.Context(), "order", "k", nil, StartOptions{})
			require.NoError(t, err)
			return id
		}
		complete := func(id string) {
			for _, step := range []string{"create-order", "reserve-inventory", "charge-payment"} {
				require.NoError(t, applyReplies(t, e, reply(id, "order", step, 1, false, protocol.OutcomeSuccess, `{}`))[0])
			}
			require.Equal(t, saga.StatusCompleted, get(t, e, id).Status)
		}
		compensate := func(id string) {
			require.NoError(t, applyReplies(t, e, reply(id, "order", "create-order", 1, false, protocol.OutcomeFailure, ``))[0])
			require.Equal(t, saga.StatusCompensated, get(t, e, id).Status)
		}

		// Old: five finished sagas (more than two batches), one of them in the operator's queue,
		// and one that is still running.
		var old []string
		for range 3 {
			id := start()
			complete(id)
			old = append(old, id)
		}
		for range 2 {
			id := start()
			compensate(id)
			old = append(old, id)
		}
		flagged := start()
		complete(flagged)
		_, err := db.Exec(db.Rebind(`UPDATE sagaflow_instances SET attention = ? WHERE id = ?`), "late effect", flagged)
		require.NoError(t, err)
		running := start()
		require.NoError(t, applyReplies(t, e, reply(running, "order", "create-order", 1, false, protocol.OutcomeSuccess, `{}`))[0])

		// Recent: finished one hour before the pass.
		c.Advance(47 * time.Hour)
		recent := start()
		complete(recent)
		c.Advance(time.Hour + time.Minute)

		p, err := e.prune(t.Context())
		require.NoError(t, err)
		require.Equal(t, int64(len(old)), p.sagas)
		require.Positive(t, p.history)
		for _, id := range old {
			_, err := e.Get(t.Context(), id)
			require.ErrorIs(t, err, ErrNotFound, "saga %s finished 48h ago", id)
			var n int
			require.NoError(t, db.Get(&n, db.Rebind(`SELECT COUNT(*) FROM sagaflow_history WHERE saga_id = ?`), id))
			require.Zero(t, n, "history of %s", id)
		}
		for _, id := range []string{flagged, running, recent} {
			require.NotEmpty(t, history(t, e, id), "saga %s is kept", id)
		}
		require.Equal(t, saga.StatusRunning, get(t, e, running).Status)

		// A second pass finds nothing more; the sagas kept stay.
		p, err = e.prune(t.Context())
		require.NoError(t, err)
		require.Zero(t, p.sagas)
		var n int
		require.NoError(t, db.Get(&n, `SELECT COUNT(*) FROM sagaflow_instances`))
		require.Equal(t, 3, n)

		// Inbox: rows older than InboxRetention go, younger ones stay.
		var before int
		require.NoError(t, db.Get(&before, `SELECT COUNT(*) FROM sagaflow_inbox`))
		require.Positive(t, before)
		var aged string
		require.NoError(t, db.Get(&aged, `SELECT message_id FROM sagaflow_inbox ORDER BY message_id LIMIT 1`))
		if db.DriverName() == "postgres" {
			_, err = db.Exec(`UPDATE sagaflow_inbox SET processed_at = now() - interval '25 hours' WHERE message_id = $1`, aged)
		} else {
			_, err = db.Exec(`UPDATE sagaflow_inbox SET processed_at = ? WHERE message_id = ?`, time.Now().Add(-25*time.Hour).UnixMilli(), aged)
		}
		require.NoError(t, err)
		p, err = e.prune(t.Context())
		require.NoError(t, err)
		require.Equal(t, int64(1), p.inbox)
		var after int
		require.NoError(t, db.Get(&after, `SELECT COUNT(*) FROM sagaflow_inbox`))
		require.Equal(t, before-1, after)
	})
}

// TestRetentionConfig: Retention is 0 (forever) or at least the inbox's horizon.
func TestRetentionConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
		err  string
	}{
		{name: "ForeverByDefault", cfg: Config{}},
		{name: "Month", cfg: Config{Retention: 720 * time.Hour}},
		{name: "ShorterThanInbox", cfg: Config{Retention: time.Hour}, err: "Retention 1h0m0s must be 0 (forever) or at least InboxRetention"},
		{name: "Negative", cfg: Config{Retention: -time.Hour}, err: "Retention must not be negative"},
		{name: "InboxBelowRedeliveryHorizon", cfg: Config{InboxRetention: time.Minute}, err: "InboxRetention 1m0s must be at least 7m0s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.cfg.withDefaults().validate()
			if tt.err == "" {
				require.NotContains(t, errString(err), "Retention")
				return
			}
			require.ErrorContains(t, err, tt.err)
		})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestRetentionRunsInRun: Engine.Run runs the retention loop: a saga finished longer ago than
// Retention disappears while Run runs, a running one stays.
func TestRetentionRunsInRun(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	c := newClock()
	e := newEngine(t, pgtest.New(t), Config{
		JetStream: w.js, Definitions: registry(t, orderDefinition(t, "order", time.Hour)), Now: c.Now,
		Rand: func() float64 { return 0.5 }, Retention: 24 * time.Hour, RetentionInterval: 20 * time.Millisecond,
	})
	done, err := e.Start(t.Context(), "order", "done", nil, StartOptions{})
	require.NoError(t, err)
	require.NoError(t, applyReplies(t, e, reply(done, "order", "create-order", 1, false, protocol.OutcomeFailure, ``))[0])
	require.Equal(t, saga.StatusCompensated, get(t, e, done).Status)
	running, err := e.Start(t.Context(), "order", "running", nil, StartOptions{})
	require.NoError(t, err)

	run(t, "engine", e.Run)
	c.Advance(25 * time.Hour)
	eventually(t, "the finished saga is deleted", func() bool {
		_, err := e.Get(t.Context(), done)
		return errors.Is(err, ErrNotFound)
	})
	require.Equal(t, saga.StatusRunning, get(t, e, running).Status)
}
