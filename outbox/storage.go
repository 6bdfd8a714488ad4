package outbox

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/sagaflow/sagaflow/internal/sqldb"
)

// This file holds every difference between PostgreSQL and SQLite in the outbox: time columns
// (timestamptz there, Unix milliseconds here), row locks and advisory locks (PostgreSQL only), and
// the queries built on them.

// claimPostgres claims up to $1 publishable rows, oldest first, locking them for this transaction.
// SKIP LOCKED lets any number of relays claim side by side. A row with an ordering key is taken
// only by the relay holding the key's advisory lock (so one relay at a time publishes a key, in
// seq order), and not at all while an earlier row of its key has failed and is still waiting
// (attempts > 0): rows queue behind a failing row of their key until it is published or
// quarantined.
const claimPostgres = `SELECT seq, message_id, subject, headers, payload, ordering_key, attempts
FROM sagaflow_outbox o
WHERE published_at IS NULL AND quarantined_at IS NULL
  AND (ordering_key IS NULL OR (
        NOT EXISTS (SELECT 1 FROM sagaflow_outbox e
                    WHERE e.ordering_key = o.ordering_key AND e.seq < o.seq
                      AND e.published_at IS NULL AND e.quarantined_at IS NULL AND e.attempts > 0)
        AND pg_try_advisory_xact_lock(1397182274, hashtext(o.ordering_key))))
ORDER BY seq
LIMIT $1
FOR UPDATE SKIP LOCKED`

// claimSQLite is claimPostgres without locks: SQLite runs one relay per database.
const claimSQLite = `SELECT seq, message_id, subject, headers, payload, ordering_key, attempts
FROM sagaflow_outbox o
WHERE published_at IS NULL AND quarantined_at IS NULL
  AND (ordering_key IS NULL OR NOT EXISTS (SELECT 1 FROM sagaflow_outbox e
        WHERE e.ordering_key = o.ordering_key AND e.seq < o.seq
          AND e.published_at IS NULL AND e.quarantined_at IS NULL AND e.attempts > 0))
ORDER BY seq
LIMIT ?`

// outboxRow is a claimed row.
type outboxRow struct {
	Seq         int64          `db:"seq"`
	MessageID   string         `db:"message_id"`
	Subject     string         `db:"subject"`
	Headers     []byte         `db:"headers"`
	Payload     []byte         `db:"payload"`
	OrderingKey sql.NullString `db:"ordering_key"`
	Attempts    int            `db:"attempts"`
}

// storage runs the outbox's queries in one dialect.
type storage struct {
	dialect    sqldb.Dialect
	claimDelay time.Duration // rows younger than this are left to Committed (see direct.go)
}

func (s storage) bind(q string) string { return sqlx.Rebind(bindType(s.dialect), q) }

// now is the SQL expression for the current time in the dialect's time representation.
func (s storage) now() string {
	if s.dialect == sqldb.Postgres {
		return "now()"
	}
	return "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
}

func (s storage) claim(ctx context.Context, q sqlx.QueryerContext, limit int) ([]outboxRow, error) {
	query := claimSQLite
	if s.dialect == sqldb.Postgres {
		query = claimPostgres
	}
	if age := s.claimAge(s.claimDelay); age != "" {
		const outer = "WHERE published_at IS NULL AND quarantined_at IS NULL"
		query = strings.Replace(query, outer, outer+age, 1)
	}
	var rows []outboxRow
	if err := sqlx.SelectContext(ctx, q, &rows, query, limit); err != nil {
		return nil, fmt.Errorf("claim outbox rows: %w", err)
	}
	if s.dialect == sqldb.Postgres {
		return s.keepKeyOrder(ctx, q, rows)
	}
	return rows, nil
}

// firstPending finds, for each ordering key, the first row still waiting to be published.
const firstPending = `SELECT ordering_key, MIN(seq) AS seq FROM sagaflow_outbox
WHERE ordering_key IN (?) AND published_at IS NULL AND quarantined_at IS NULL
GROUP BY ordering_key`

// keepKeyOrder drops from a PostgreSQL claim the rows of every key whose first waiting row was not
// claimed. The claim takes each key's advisory lock row by row, with the snapshot of the
// statement's start: a relay that held a key while the claim passed its first rows, and committed
// before the claim reached later ones, leaves the claim holding the key without its first row.
// Re-reading now, with every claimed key's lock held (so no other relay is publishing it), finds
// those keys; their rows stay for a later claim.
func (s storage) keepKeyOrder(ctx context.Context, q sqlx.QueryerContext, rows []outboxRow) ([]outboxRow, error) {
	first := map[string]int64{} // key → smallest claimed seq (rows come in seq order)
	var keys []string
	for _, r := range rows {
		if !r.OrderingKey.Valid {
			continue
		}
		if _, ok := first[r.OrderingKey.String]; !ok {
			first[r.OrderingKey.String] = r.Seq
			keys = append(keys, r.OrderingKey.String)
		}
	}
	if len(keys) == 0 {
		return rows, nil
	}
	query, args, err := sqlx.In(firstPending, keys)
	if err != nil {
		return nil, fmt.Errorf("check ordering keys: %w", err)
	}
	var pending []struct {
		Key string `db:"ordering_key"`
		Seq int64  `db:"seq"`
	}
	if err := sqlx.SelectContext(ctx, q, &pending, s.bind(query), args...); err != nil {
		return nil, fmt.Errorf("check ordering keys: %w", err)
	}
	blocked := map[string]bool{}
	for _, p := range pending {
		if p.Seq < first[p.Key] {
			blocked[p.Key] = true
		}
	}
	if len(blocked) == 0 {
		return rows, nil
	}
	kept := rows[:0]
	for _, r := range rows {
		if !r.OrderingKey.Valid || !blocked[r.OrderingKey.String] {
			kept = append(kept, r)
		}
	}
	return kept, nil
}

// markPublished deletes the rows (keep false) or stamps them published.
func (s storage) markPublished(ctx context.Context, ex sqlx.ExecerContext, seqs []int64, keep bool) error {
	base := `DELETE FROM sagaflow_outbox WHERE seq IN (?)`
	if keep {
		base = `UPDATE sagaflow_outbox SET published_at = ` + s.now() + `, last_error = NULL WHERE seq IN (?)`
	}
	return s.execIn(ctx, ex, base, seqs, len(seqs))
}

// execIn runs query, whose one "IN (?)" takes list (a slice of n values): on PostgreSQL as one array
// parameter ("= ANY($1)"), cheaper to send and to plan than one parameter per row; on SQLite
// expanded by sqlx.In. An empty list runs nothing.
func (s storage) execIn(ctx context.Context, ex sqlx.ExecerContext, query string, list any, n int) error {
	if n == 0 {
		return nil
	}
	if s.dialect == sqldb.Postgres {
		q := strings.Replace(query, "IN (?)", "= ANY($1)", 1)
		if _, err := ex.ExecContext(ctx, q, pq.Array(list)); err != nil {
			return fmt.Errorf("mark %d outbox row(s) published: %w", n, err)
		}
		return nil
	}
	q, args, err := sqlx.In(query, list)
	if err != nil {
		return fmt.Errorf("mark outbox rows published: %w", err)
	}
	if _, err := ex.ExecContext(ctx, s.bind(q), args...); err != nil {
		return fmt.Errorf("mark %d outbox row(s) published: %w", n, err)
	}
	return nil
}

// markFailed records a permanent failure of one row: one more attempt, its error, and quarantine
// when attempts reach maxAttempts. It reports whether the row is now quarantined.
func (s storage) markFailed(ctx context.Context, ex sqlx.ExecerContext, r outboxRow, cause string, maxAttempts int) (bool, error) {
	quarantine := r.Attempts+1 >= maxAttempts
	q := `UPDATE sagaflow_outbox SET attempts = attempts + 1, last_error = ? WHERE seq = ?`
	if quarantine {
		q = `UPDATE sagaflow_outbox SET attempts = attempts + 1, last_error = ?, quarantined_at = ` + s.now() + ` WHERE seq = ?`
	}
	if _, err := ex.ExecContext(ctx, s.bind(q), cause, r.Seq); err != nil {
		return false, fmt.Errorf("record failure of outbox message %s: %w", r.MessageID, err)
	}
	return quarantine, nil
}

// prune deletes rows published more than retention ago.
func (s storage) prune(ctx context.Context, ex sqlx.ExecerContext, retention time.Duration) (int64, error) {
	var res sql.Result
	var err error
	if s.dialect == sqldb.Postgres {
		res, err = ex.ExecContext(ctx, `DELETE FROM sagaflow_outbox WHERE published_at < now() - $1 * interval '1 microsecond'`, retention.Microseconds())
	} else {
		res, err = ex.ExecContext(ctx, `DELETE FROM sagaflow_outbox WHERE published_at < ?`, time.Now().Add(-retention).UnixMilli())
	}
	if err != nil {
		return 0, fmt.Errorf("prune published outbox rows: %w", err)
	}
	return res.RowsAffected()
}

// pruneInboxBatch is the most inbox rows one statement of pruneInbox deletes, so that a first
// pass over a large table (an upgrade) never holds a long lock.
const pruneInboxBatch = 500

// pruneInbox deletes consumer's inbox rows older than olderThan, pruneInboxBatch rows per statement
// (each its own transaction; on PostgreSQL skipping rows another replica's pass holds).
func (s storage) pruneInbox(ctx context.Context, ex sqlx.ExecerContext, consumer string, olderThan time.Duration) (int64, error) {
	var q string
	var cutoff any
	if s.dialect == sqldb.Postgres {
		q = `DELETE FROM sagaflow_inbox WHERE (consumer, message_id) IN (SELECT consumer, message_id FROM sagaflow_inbox
	WHERE consumer = $1 AND processed_at < now() - $2 * interval '1 microsecond' LIMIT $3 FOR UPDATE SKIP LOCKED)`
		cutoff = olderThan.Microseconds()
	} else {
		q = `DELETE FROM sagaflow_inbox WHERE (consumer, message_id) IN (SELECT consumer, message_id FROM sagaflow_inbox
	WHERE consumer = ? AND processed_at < ? LIMIT ?)`
		cutoff = time.Now().Add(-olderThan).UnixMilli()
	}
	var total int64
	for {
		res, err := ex.ExecContext(ctx, q, consumer, cutoff, pruneInboxBatch)
		if err != nil {
			return total, fmt.Errorf("prune inbox of %s: %w", consumer, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, fmt.Errorf("prune inbox of %s: %w", consumer, err)
		}
		total += n
		if n < pruneInboxBatch {
			return total, nil
		}
	}
}

// stats reads the backlog figures.
func (s storage) stats(ctx context.Context, q sqlx.QueryerContext) (backlog int64, oldest time.Duration, quarantined int64, err error) {
	if s.dialect == sqldb.Postgres {
		var age float64
		err = q.QueryRowxContext(ctx, `SELECT
	count(*) FILTER (WHERE quarantined_at IS NULL),
	COALESCE(EXTRACT(EPOCH FROM now() - MIN(created_at) FILTER (WHERE quarantined_at IS NULL)), 0)::float8,
	count(*) FILTER (WHERE quarantined_at IS NOT NULL)
FROM sagaflow_outbox WHERE published_at IS NULL`).Scan(&backlog, &age, &quarantined)
		oldest = time.Duration(age * float64(time.Second))
	} else {
		var min sql.NullInt64
		err = q.QueryRowxContext(ctx, `SELECT
	COALESCE(SUM(quarantined_at IS NULL), 0),
	MIN(CASE WHEN quarantined_at IS NULL THEN created_at END),
	COALESCE(SUM(quarantined_at IS NOT NULL), 0)
FROM sagaflow_outbox WHERE published_at IS NULL`).Scan(&backlog, &min, &quarantined)
		if min.Valid {
			oldest = max(0, time.Since(time.UnixMilli(min.Int64)))
		}
	}
	if err != nil {
		return 0, 0, 0, fmt.Errorf("read outbox stats: %w", err)
	}
	return backlog, oldest, quarantined, nil
}

// recordInbox inserts the inbox rows of consumer's ids, which are distinct, and adds to first the
// ids it inserted (those no committed transaction had). On PostgreSQL the ids travel as one array
// parameter, so the statement text is the same for every batch.
func (s storage) recordInbox(ctx context.Context, q Querier, consumer string, ids []string, first map[string]bool) error {
	var rows *sql.Rows
	var err error
	if s.dialect == sqldb.Postgres {
		rows, err = q.QueryContext(ctx, `INSERT INTO sagaflow_inbox (consumer, message_id) SELECT $1, unnest($2::text[])
			ON CONFLICT DO NOTHING RETURNING message_id`, consumer, pq.Array(ids))
	} else {
		query := `INSERT INTO sagaflow_inbox (consumer, message_id) VALUES ` +
			strings.TrimSuffix(strings.Repeat("(?, ?), ", len(ids)), ", ") + ` ON CONFLICT DO NOTHING RETURNING message_id`
		args := make([]any, 0, 2*len(ids))
		for _, id := range ids {
			args = append(args, consumer, id)
		}
		rows, err = q.QueryContext(ctx, query, args...)
	}
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return err
		}
		first[id] = true
	}
	return rows.Err()
}
