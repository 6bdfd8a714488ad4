package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jmoiron/sqlx"

	"github.com/sagaflow/sagaflow/internal/sqldb"
)

// Inbox makes consumption idempotent: it records (consumer, message id) in the same transaction as
// the message's effects, so a message delivered twice, or re-published after JetStream's duplicate
// window, applies its effects once. It is safe for concurrent use.
type Inbox struct {
	dialect  sqldb.Dialect
	consumer string
}

// NewInbox returns the inbox of consumer (a name stable across restarts, e.g. the durable consumer
// name) in db's database (its dialect is detected from db's driver).
func NewInbox(db *sqlx.DB, consumer string) *Inbox {
	return &Inbox{dialect: sqldb.DialectOf(db), consumer: consumer}
}

const recordQuery = `INSERT INTO sagaflow_inbox (consumer, message_id) VALUES (?, ?) ON CONFLICT DO NOTHING`

// Record inserts msgID inside tx. first is false when the message was already recorded (by a
// committed transaction): skip its effects. On PostgreSQL a concurrent transaction recording the
// same id makes Record wait for it to finish.
func (i *Inbox) Record(ctx context.Context, tx Tx, msgID string) (first bool, err error) {
	if msgID == "" {
		return false, errors.New("inbox: record: message id is empty")
	}
	res, err := tx.ExecContext(ctx, sqlx.Rebind(bindType(i.dialect), recordQuery), i.consumer, msgID)
	if err != nil {
		return false, fmt.Errorf("inbox %s: record message %s: %w", i.consumer, msgID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("inbox %s: record message %s: %w", i.consumer, msgID, err)
	}
	return n == 1, nil
}

// Querier is what RecordAll needs of the caller's transaction; *sql.Tx and *sqlx.Tx both have it.
type Querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// RecordAll is Record for a batch of messages: it inserts msgIDs inside tx, 500 per statement, and
// returns the set of those recorded now (not by a committed transaction before): apply their
// effects, skip the others. An id given twice is recorded once and reported once.
func (i *Inbox) RecordAll(ctx context.Context, tx Querier, msgIDs []string) (map[string]bool, error) {
	first := make(map[string]bool, len(msgIDs))
	ids := make([]string, 0, len(msgIDs))
	seen := make(map[string]bool, len(msgIDs))
	for _, id := range msgIDs {
		if id == "" {
			return nil, errors.New("inbox: record: message id is empty")
		}
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	s := storage{dialect: i.dialect}
	for start := 0; start < len(ids); start += rowsPerInsert {
		part := ids[start:min(start+rowsPerInsert, len(ids))]
		if err := s.recordInbox(ctx, tx, i.consumer, part, first); err != nil {
			return nil, fmt.Errorf("inbox %s: record %d message(s): %w", i.consumer, len(part), err)
		}
	}
	return first, nil
}

// Handler wraps fn as a Watermill handler: each message runs in its own transaction on db that
// first records the message's UUID in the inbox and then calls fn; it commits when fn returns nil.
// A message already recorded commits nothing and returns nil (it is acked without calling fn). An
// error from fn rolls everything back, inbox row included, and is returned (the message is nacked
// and redelivered).
func (i *Inbox) Handler(db *sqlx.DB, fn func(ctx context.Context, tx *sqlx.Tx, msg *message.Message) error) message.NoPublishHandlerFunc {
	return func(msg *message.Message) error {
		ctx := msg.Context()
		return sqldb.InTx(ctx, db, func(tx *sqlx.Tx) error {
			first, err := i.Record(ctx, tx, msg.UUID)
			if err != nil {
				return err
			}
			if !first {
				return nil
			}
			return fn(ctx, tx, msg)
		})
	}
}

// Prune deletes this consumer's inbox rows older than olderThan, 500 per statement, and returns
// how many. Several replicas may prune at once. The engine runs it (engine.Config.InboxRetention);
// a participant's barrier replaces an inbox and is pruned by the participant. Choose
// olderThan well beyond the redelivery horizon (MaxDeliver × AckWait, plus any NakDelay) and the
// relay's worst re-publish lag, or a late duplicate would be applied again.
func (i *Inbox) Prune(ctx context.Context, db *sqlx.DB, olderThan time.Duration) (int64, error) {
	if olderThan <= 0 {
		return 0, fmt.Errorf("inbox %s: prune: olderThan %s must be positive", i.consumer, olderThan)
	}
	return storage{dialect: i.dialect}.pruneInbox(ctx, db, i.consumer, olderThan)
}
