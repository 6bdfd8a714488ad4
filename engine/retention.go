package engine

import (
	"context"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/sqldb"
	"github.com/sagaflow/sagaflow/saga"
)

// Retention: what the engine deletes, and when it is safe.
//
// Finished sagas (Config.Retention). A completed or compensated saga whose finished_at is older
// than Retention is deleted with its history, in transactions of Config.RetentionBatch sagas. A
// failed saga (it waits for an operator) and a saga in the operator's queue (attention) are kept
// whatever their age, and so is every unfinished saga. Each batch locks the sagas it deletes with
// FOR UPDATE SKIP LOCKED on PostgreSQL (SQLite's write transactions are exclusive), so any number of
// replicas may prune at once and a saga being redriven is skipped, not waited for. A reply that
// arrives for a deleted saga is dead-lettered as a reply for an unknown saga; Retention is at least
// InboxRetention, beyond every redelivery of a reply (below).
//
// The orchestrator's inbox (Config.InboxRetention). The inbox keeps the message id of every reply
// applied, so that a duplicate applies nothing twice. A duplicate can arrive:
//   - by JetStream redelivery, until MaxDeliver × AckWait after the first delivery (the reply
//     consumer has no backoff: 10 × 30s = 5 minutes with the defaults), when the ack was lost;
//   - by a participant's relay re-publishing a reply it had published but not marked (a crash
//     between the two): JetStream drops it within the stream's Duplicates window (2 minutes by
//     default); after that it is a new message, which only the inbox stops.
//
// So a row is needed for MaxDeliver × AckWait + Duplicates after it was written; the default, 24
// hours, is a wide margin over that (and covers a relay that was down for hours). A duplicate older
// than the horizon is still harmless to the saga: its step and attempt are no longer in flight, so
// it is recorded as ignored, never applied.

// DefaultInboxRetention is how long the orchestrator keeps a reply's inbox row (see Config).
const DefaultInboxRetention = 24 * time.Hour

// replyAckWait is the reply consumer's AckWait (bus.SubscriberConfig's default).
const replyAckWait = 30 * time.Second

// minInboxRetention is the redelivery horizon of a reply: MaxDeliver × AckWait plus the stream's
// duplicate window.
func minInboxRetention(maxDeliver int) time.Duration {
	return time.Duration(maxDeliver)*replyAckWait + bus.DefaultDuplicates
}

// retentionInstruments count what retention deletes.
type retentionInstruments struct {
	deleted metric.Int64Counter
}

func newRetentionInstruments(mp metric.MeterProvider) (*retentionInstruments, error) {
	c, err := mp.Meter(instrumentationName).Int64Counter("sagaflow.retention.deleted", metric.WithUnit("{row}"),
		metric.WithDescription("Rows deleted by retention, per table (sagaflow_instances, sagaflow_history, sagaflow_inbox)."))
	if err != nil {
		return nil, fmt.Errorf("engine metrics: %w", err)
	}
	return &retentionInstruments{deleted: c}, nil
}

// runRetention prunes every Config.RetentionInterval until ctx is done. A failed pass is logged
// and retried at the next interval.
func (e *Engine) runRetention(ctx context.Context) error {
	ticker := time.NewTicker(e.cfg.RetentionInterval)
	defer ticker.Stop()
	for {
		if _, err := e.prune(ctx); err != nil && ctx.Err() == nil {
			e.log.WarnContext(ctx, "retention pass failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

// pruned is what one retention pass deleted.
type pruned struct {
	sagas, history, inbox int64
}

// prune runs one retention pass: finished sagas older than Config.Retention (when set) with their
// history, batch by batch until none is left, then the inbox rows older than
// Config.InboxRetention.
func (e *Engine) prune(ctx context.Context) (pruned, error) {
	var p pruned
	start := time.Now()
	if e.cfg.Retention > 0 {
		cutoff := e.cfg.Now().Add(-e.cfg.Retention)
		for ctx.Err() == nil {
			var sagas, history int64
			err := sqldb.InTx(ctx, e.cfg.DB, func(tx *sqlx.Tx) error {
				var err error
				sagas, history, err = e.store.deleteFinished(ctx, tx, cutoff, e.cfg.RetentionBatch)
				return err
			})
			if err != nil {
				return p, err
			}
			p.sagas += sagas
			p.history += history
			e.countDeleted(ctx, "sagaflow_instances", sagas)
			e.countDeleted(ctx, "sagaflow_history", history)
			if sagas > 0 {
				e.log.DebugContext(ctx, "retention batch deleted", "sagas", sagas, "history", history)
			}
			if sagas < int64(e.cfg.RetentionBatch) {
				break
			}
		}
	}
	n, err := e.inbox.Prune(ctx, e.cfg.DB, e.cfg.InboxRetention)
	if err != nil {
		return p, fmt.Errorf("retention: %w", err)
	}
	p.inbox = n
	e.countDeleted(ctx, "sagaflow_inbox", n)
	if p != (pruned{}) {
		e.log.InfoContext(ctx, "retention pass", "sagas", p.sagas, "history", p.history, "inbox", p.inbox,
			"duration", time.Since(start))
	}
	return p, ctx.Err()
}

func (e *Engine) countDeleted(ctx context.Context, table string, n int64) {
	if n > 0 {
		e.retention.deleted.Add(ctx, n, metric.WithAttributes(attribute.String("table", table)))
	}
}

// deleteFinished deletes up to limit completed or compensated sagas that finished before cutoff and
// are not in the operator's queue, oldest first, with their history. It skips sagas another
// transaction holds (PostgreSQL).
func (s *store) deleteFinished(ctx context.Context, tx *sqlx.Tx, cutoff time.Time, limit int) (sagas, history int64, err error) {
	var ids []string
	q := `SELECT id FROM sagaflow_instances WHERE finished_at IS NOT NULL AND finished_at < ? AND status IN (?, ?)
		AND attention = '' ORDER BY finished_at LIMIT ?` + s.claimSuffix
	err = sqlx.SelectContext(ctx, tx, &ids, tx.Rebind(q), cutoff.UTC(), string(saga.StatusCompleted), string(saga.StatusCompensated), limit)
	if err != nil {
		return 0, 0, fmt.Errorf("retention: find finished sagas: %w", sqldb.Translate(err))
	}
	if len(ids) == 0 {
		return 0, 0, nil
	}
	q, args, err := sqlx.In(`DELETE FROM sagaflow_history WHERE saga_id IN (?)`, ids)
	if err != nil {
		return 0, 0, fmt.Errorf("retention: delete history: %w", err)
	}
	res, err := tx.ExecContext(ctx, tx.Rebind(q), args...)
	if err != nil {
		return 0, 0, fmt.Errorf("retention: delete history: %w", sqldb.Translate(err))
	}
	if history, err = res.RowsAffected(); err != nil {
		return 0, 0, fmt.Errorf("retention: delete history: %w", err)
	}
	q, args, err = sqlx.In(`DELETE FROM sagaflow_instances WHERE id IN (?)`, ids)
	if err != nil {
		return 0, 0, fmt.Errorf("retention: delete sagas: %w", err)
	}
	res, err = tx.ExecContext(ctx, tx.Rebind(q), args...)
	if err != nil {
		return 0, 0, fmt.Errorf("retention: delete sagas: %w", sqldb.Translate(err))
	}
	if sagas, err = res.RowsAffected(); err != nil {
		return 0, 0, fmt.Errorf("retention: delete sagas: %w", err)
	}
	return sagas, history, nil
}
