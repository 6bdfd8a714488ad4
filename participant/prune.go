package participant

import (
	"context"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/sagaflow/sagaflow/internal/sqldb"
)

// Barrier retention: how long a barrier row must live.
//
// A barrier row answers every later copy of its command, and its compensation row (a tombstone
// when the forward action never ran here) refuses a forward command that arrives after it. Copies
// of a command arrive:
//   - by JetStream redelivery: until MaxDeliver × AckWait (+ NakDelay each) after the first
//     delivery, 10 × 30s ≈ 5 minutes with the defaults;
//   - by the orchestrator's retries: a new message for the same (saga, step, action) until the
//     step's retry budget is spent — the sum of its attempts' timeouts and backoffs, which the
//     participant cannot see (a definition's steps have timeouts of seconds to minutes);
//   - a hanging forward after its compensation: delayed on the bus at most as long as a retry of
//     that forward could still be in flight, i.e. the same horizon;
//   - by an operator's redrive of a failed saga (the engine keeps failed sagas until an operator
//     acts): the compensation of a step must still find its forward row, or it would be taken for
//     a null compensation and the effect left undone.
//
// The participant does not see the saga finish, so the rule is per saga: a saga's rows are pruned
// only when every row of that saga (as recorded here) is older than Config.BarrierRetention. A saga
// whose step is still being retried or compensated has a recent row, and none of its rows goes.
// The default, 30 days, is far beyond any step's deadline chain; it must also exceed the longest a
// failed saga waits for an operator's redrive.

// DefaultBarrierRetention is Config.BarrierRetention's default.
const DefaultBarrierRetention = 30 * 24 * time.Hour

// pruneBatch is the most barrier rows deleted in one transaction.
const pruneBatch = 500

// pruneInterval is the pause between two pruning passes.
const pruneInterval = time.Minute

// barrierPruner deletes old barrier rows. It holds the one dialect difference of the barrier: how
// the database computes "older than" against its own clock (created_at is set by the database,
// TIMESTAMPTZ on PostgreSQL, CURRENT_TIMESTAMP text on SQLite).
type barrierPruner struct {
	db        *sqlx.DB
	retention time.Duration
	// cutoff is the SQL expression of now - retention, with one parameter; arg is that parameter.
	cutoff string
	arg    any
	// lockSuffix skips rows another replica's pass holds (PostgreSQL).
	lockSuffix string
}

func newBarrierPruner(db *sqlx.DB, retention time.Duration) *barrierPruner {
	p := &barrierPruner{db: db, retention: retention}
	if sqldb.DialectOf(db) == sqldb.Postgres {
		p.cutoff = `now() - ? * interval '1 second'`
		p.arg = int64(retention / time.Second)
		p.lockSuffix = ` FOR UPDATE SKIP LOCKED`
	} else {
		p.cutoff = `datetime('now', ?)`
		p.arg = fmt.Sprintf("-%d seconds", int64(retention/time.Second))
	}
	return p
}

// pruneOnce deletes, in transactions of pruneBatch rows, the barrier rows of every saga whose rows
// are all older than the retention, and returns how many it deleted.
func (b *barrierPruner) pruneOnce(ctx context.Context) (int64, error) {
	q := b.db.Rebind(`DELETE FROM sagaflow_barrier WHERE (saga_id, step, action) IN (
	SELECT o.saga_id, o.step, o.action FROM sagaflow_barrier o
	WHERE o.created_at < ` + b.cutoff + `
	AND NOT EXISTS (SELECT 1 FROM sagaflow_barrier n WHERE n.saga_id = o.saga_id AND n.created_at >= ` + b.cutoff + `)
	LIMIT ?` + b.lockSuffix + `)`)
	var total int64
	for ctx.Err() == nil {
		var n int64
		err := sqldb.InTx(ctx, b.db, func(tx *sqlx.Tx) error {
			res, err := tx.ExecContext(ctx, q, b.arg, b.arg, pruneBatch)
			if err != nil {
				return fmt.Errorf("prune barrier: %w", sqldb.Translate(err))
			}
			n, err = res.RowsAffected()
			return err
		})
		if err != nil {
			return total, err
		}
		total += n
		if n < pruneBatch {
			break
		}
	}
	return total, ctx.Err()
}

// pruneBarrier prunes the barrier every pruneInterval until ctx is done; a failed pass is logged
// and retried at the next one.
func (p *Participant) pruneBarrier(ctx context.Context) {
	if p.cfg.BarrierRetention < 0 {
		return
	}
	b := newBarrierPruner(p.db, p.cfg.BarrierRetention)
	ticker := time.NewTicker(pruneInterval)
	defer ticker.Stop()
	for {
		start := time.Now()
		n, err := b.pruneOnce(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			p.log.WarnContext(ctx, "barrier pruning failed", "err", err)
		case n > 0:
			p.log.InfoContext(ctx, "barrier pruned", "rows", n, "duration", time.Since(start))
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}
