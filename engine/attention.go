package engine

import (
	"context"
	"fmt"

	"github.com/jmoiron/sqlx"

	"github.com/sagaflow/sagaflow/internal/sqldb"
)

// Resolve takes the instance id out of the operator's queue once an operator has dealt with what
// put it there (for example reconciled a late effect by hand): it clears NeedsAttention and records
// a HistoryResolved entry with actor, reason and the attention it cleared. The saga's state does
// not change. It fails with an error matching ErrNoAttention when the instance does not need
// attention, and ErrNotFound when there is no such instance. (A redrive clears the flag too.)
func (e *Engine) Resolve(ctx context.Context, id, actor, reason string) error {
	var t *tx
	err := sqldb.InTx(ctx, e.cfg.DB, func(sqlTx *sqlx.Tx) error {
		r, err := e.store.lockOne(ctx, sqlTx, "resolve", id)
		if err != nil {
			return err
		}
		if r.attention == "" {
			return fmt.Errorf("resolve saga %s: %w", id, ErrNoAttention)
		}
		t = e.newTx(sqlTx)
		t.record(r, HistoryEntry{Kind: HistoryResolved, Actor: actor, Detail: detail("reason", reason, "attention", r.attention)})
		r.attention = ""
		return t.flush(ctx)
	})
	if err != nil {
		return err
	}
	t.committed(ctx)
	return nil
}
