package engine

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/sagaflow/sagaflow/internal/sqldb"
	"github.com/sagaflow/sagaflow/saga"
)

// store is the SQL side of the engine: every query lives here, and so does every difference
// between PostgreSQL and SQLite (row locks, NOTIFY). One query text serves both dialects through
// sqlx's Rebind.
type store struct {
	dialect sqldb.Dialect
	// lockSuffix locks the selected rows until the transaction ends: FOR UPDATE on PostgreSQL;
	// nothing on SQLite, whose write transactions are exclusive (BEGIN IMMEDIATE).
	lockSuffix string
	// claimSuffix locks rows for claiming, skipping those another replica holds.
	claimSuffix string
}

func newStore(d sqldb.Dialect) *store {
	s := &store{dialect: d}
	if d == sqldb.Postgres {
		s.lockSuffix = " FOR UPDATE"
		s.claimSuffix = " FOR UPDATE SKIP LOCKED"
	}
	return s
}

// timerChannel is the PostgreSQL NOTIFY channel that wakes the timers of every replica.
const timerChannel = "sagaflow_timers"

// row is an instance as stored, locked by the current transaction.
type row struct {
	inst       saga.Instance
	traceID    string
	traceFlags byte
	idemKey    string
	rowVersion int64
	historySeq int64
	isNew      bool
	// attention says why the saga is in the operator's queue; empty when it is not.
	attention string
}

// record is the raw columns of an instance.
type record struct {
	ID         string         `db:"id"`
	State      []byte         `db:"state"`
	TraceID    string         `db:"trace_id"`
	TraceFlags int            `db:"trace_flags"`
	IdemKey    sql.NullString `db:"idempotency_key"`
	RowVersion int64          `db:"row_version"`
	HistorySeq int64          `db:"history_seq"`
	Attention  string         `db:"attention"`
}

func (r *record) row() (*row, error) {
	out := &row{traceID: r.TraceID, traceFlags: byte(r.TraceFlags), idemKey: r.IdemKey.String, rowVersion: r.RowVersion,
		historySeq: r.HistorySeq, attention: r.Attention}
	if err := json.Unmarshal(r.State, &out.inst); err != nil {
		return nil, fmt.Errorf("decode state of saga %s: %w", r.ID, err)
	}
	return out, nil
}

// stored is r as a read of the database returns it once r is stored: its state goes through its
// JSON encoding, so the caller shares nothing with r.
func (r *row) stored() (*Instance, error) {
	state, err := json.Marshal(r.inst)
	if err != nil {
		return nil, fmt.Errorf("encode saga %s: %w", r.inst.ID, err)
	}
	out := r.public()
	out.Instance = saga.Instance{}
	if err := json.Unmarshal(state, &out.Instance); err != nil {
		return nil, fmt.Errorf("decode saga %s: %w", r.inst.ID, err)
	}
	return &out, nil
}

func (r *row) public() Instance {
	return Instance{Instance: r.inst, TraceID: r.traceID, IdempotencyKey: r.idemKey, RowVersion: r.rowVersion,
		NeedsAttention: r.attention != "", Attention: r.attention}
}

const recordColumns = `id, state, trace_id, trace_flags, idempotency_key, row_version, history_seq, attention`

// lockOne locks the instance id for an operator's request (verb names it in errors: "resolve",
// "retry", "cancel"); it fails with an error matching ErrNotFound when there is no such instance.
func (s *store) lockOne(ctx context.Context, tx *sqlx.Tx, verb, id string) (*row, error) {
	rows, err := s.lock(ctx, tx, []string{id})
	if err != nil {
		return nil, err
	}
	r, ok := rows[id]
	if !ok {
		return nil, fmt.Errorf("%s saga %s: %w", verb, id, ErrNotFound)
	}
	return r, nil
}

// lock loads and locks the instances with the given ids, in id order (so that two transactions
// locking overlapping sets cannot deadlock). Missing ids are absent from the map.
func (s *store) lock(ctx context.Context, tx *sqlx.Tx, ids []string) (map[string]*row, error) {
	q, args, err := sqlx.In(`SELECT `+recordColumns+` FROM sagaflow_instances WHERE id IN (?) ORDER BY id`+s.lockSuffix, ids)
	if err != nil {
		return nil, fmt.Errorf("lock sagas: %w", err)
	}
	return s.selectRows(ctx, tx, tx.Rebind(q), args...)
}

// claimDue locks up to limit instances whose deadline is at or before now, oldest deadline first,
// skipping (on PostgreSQL) those another replica is working on.
func (s *store) claimDue(ctx context.Context, tx *sqlx.Tx, now time.Time, limit int) (map[string]*row, error) {
	q := `SELECT ` + recordColumns + ` FROM sagaflow_instances WHERE deadline IS NOT NULL AND deadline <= ? ORDER BY deadline LIMIT ?` + s.claimSuffix
	return s.selectRows(ctx, tx, tx.Rebind(q), now.UTC(), limit)
}

func (s *store) selectRows(ctx context.Context, q sqlx.QueryerContext, query string, args ...any) (map[string]*row, error) {
	var recs []record
	if err := sqlx.SelectContext(ctx, q, &recs, query, args...); err != nil {
		return nil, fmt.Errorf("load sagas: %w", sqldb.Translate(err))
	}
	rows := make(map[string]*row, len(recs))
	for i := range recs {
		r, err := recs[i].row()
		if err != nil {
			return nil, err
		}
		rows[recs[i].ID] = r
	}
	return rows, nil
}

// nextDeadline returns the earliest pending deadline, or the zero time when there is none. (It
// selects the column rather than MIN(deadline) so that SQLite keeps its declared type.)
func (s *store) nextDeadline(ctx context.Context, db *sqlx.DB) (time.Time, error) {
	var next time.Time
	err := db.QueryRowxContext(ctx, `SELECT deadline FROM sagaflow_instances WHERE deadline IS NOT NULL ORDER BY deadline LIMIT 1`).Scan(&next)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("read next deadline: %w", err)
	}
	return next, nil
}

// statusCount is the number of instances of a definition in a status.
type statusCount struct {
	Definition string `db:"definition"`
	Status     string `db:"status"`
	N          int64  `db:"n"`
}

// countUnfinished counts the running, compensating and failed instances per definition and status.
func (s *store) countUnfinished(ctx context.Context, db sqlx.QueryerContext) ([]statusCount, error) {
	var out []statusCount
	err := sqlx.SelectContext(ctx, db, &out, `SELECT definition, status, COUNT(*) AS n FROM sagaflow_instances
		WHERE status IN ('running', 'compensating', 'failed') GROUP BY definition, status`)
	if err != nil {
		return nil, fmt.Errorf("count unfinished sagas: %w", err)
	}
	return out, nil
}

// findByIdempotencyKey returns the id of the instance of definition started with key, or "".
func (s *store) findByIdempotencyKey(ctx context.Context, q sqlx.QueryerContext, definition, key string) (string, error) {
	var id string
	err := sqlx.GetContext(ctx, q, &id, sqlx.Rebind(bindOf(s.dialect), `SELECT id FROM sagaflow_instances WHERE definition = ? AND idempotency_key = ?`), definition, key)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("find saga by idempotency key: %w", sqldb.Translate(err))
	}
	return id, nil
}

func bindOf(d sqldb.Dialect) int {
	if d == sqldb.Postgres {
		return sqlx.DOLLAR
	}
	return sqlx.QUESTION
}

// insert stores a new instance. It reports false, writing nothing, when an instance of the same
// definition already has r's idempotency key.
func (s *store) insert(ctx context.Context, tx sqlx.ExtContext, r *row) (bool, error) {
	state, err := json.Marshal(r.inst)
	if err != nil {
		return false, fmt.Errorf("encode saga %s: %w", r.inst.ID, err)
	}
	var idem any
	if r.idemKey != "" {
		idem = r.idemKey
	}
	q := `INSERT INTO sagaflow_instances (id, definition, version, business_key, status, state, trace_id, trace_flags, deadline,
		idempotency_key, row_version, history_seq, created_at, updated_at, finished_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (definition, idempotency_key) DO NOTHING`
	in := &r.inst
	res, err := tx.ExecContext(ctx, sqlx.Rebind(bindOf(s.dialect), q), in.ID, in.Definition, in.Version, in.BusinessKey,
		string(in.Status), string(state), r.traceID, int(r.traceFlags), nullTime(in.Deadline), idem, r.rowVersion, r.historySeq,
		in.CreatedAt.UTC(), in.UpdatedAt.UTC(), nullTime(in.FinishedAt))
	if err != nil {
		return false, fmt.Errorf("insert saga %s: %w", in.ID, sqldb.Translate(err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("insert saga %s: %w", in.ID, sqldb.Translate(err))
	}
	return n == 1, nil
}

// update stores r over the version it was loaded with, and bumps that version. It fails with
// ErrConflict when the row moved since.
func (s *store) update(ctx context.Context, tx sqlx.ExtContext, r *row) error {
	state, err := json.Marshal(r.inst)
	if err != nil {
		return fmt.Errorf("encode saga %s: %w", r.inst.ID, err)
	}
	q := `UPDATE sagaflow_instances SET status = ?, state = ?, deadline = ?, row_version = row_version + 1,
		history_seq = ?, updated_at = ?, finished_at = ?, attention = ? WHERE id = ? AND row_version = ?`
	in := &r.inst
	res, err := tx.ExecContext(ctx, sqlx.Rebind(bindOf(s.dialect), q), string(in.Status), string(state), nullTime(in.Deadline),
		r.historySeq, in.UpdatedAt.UTC(), nullTime(in.FinishedAt), r.attention, in.ID, r.rowVersion)
	if err != nil {
		return fmt.Errorf("update saga %s: %w", in.ID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("update saga %s: %w", in.ID, err)
	}
	if n != 1 {
		return fmt.Errorf("update saga %s at row version %d: %w", in.ID, r.rowVersion, ErrConflict)
	}
	r.rowVersion++
	return nil
}

// updateAll stores every row of rows like update. On PostgreSQL it is one statement for the
// whole batch (UPDATE … FROM VALUES), saving a round trip per instance on the hot path; SQLite
// runs in process, where a statement per row costs no round trip.
func (s *store) updateAll(ctx context.Context, tx sqlx.ExtContext, rows []*row) error {
	if s.dialect != sqldb.Postgres || len(rows) == 1 {
		for _, r := range rows {
			if err := s.update(ctx, tx, r); err != nil {
				return err
			}
		}
		return nil
	}
	for len(rows) > 0 {
		n := min(len(rows), historyChunk)
		chunk := rows[:n]
		rows = rows[n:]
		var b strings.Builder
		b.WriteString(`UPDATE sagaflow_instances AS i SET status = v.status, state = v.state::jsonb,
		deadline = v.deadline::timestamptz, row_version = i.row_version + 1, history_seq = v.history_seq::bigint,
		updated_at = v.updated_at::timestamptz, finished_at = v.finished_at::timestamptz, attention = v.attention FROM (VALUES `)
		args := make([]any, 0, n*9)
		for k, r := range chunk {
			state, err := json.Marshal(r.inst)
			if err != nil {
				return fmt.Errorf("encode saga %s: %w", r.inst.ID, err)
			}
			if k > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(?, ?, ?, ?, ?, ?, ?, ?, ?)")
			in := &r.inst
			args = append(args, in.ID, r.rowVersion, string(in.Status), string(state), nullTime(in.Deadline),
				r.historySeq, in.UpdatedAt.UTC(), nullTime(in.FinishedAt), r.attention)
		}
		b.WriteString(`) AS v (id, row_version, status, state, deadline, history_seq, updated_at, finished_at, attention)
		WHERE i.id = v.id AND i.row_version = v.row_version::bigint`)
		res, err := tx.ExecContext(ctx, sqlx.Rebind(sqlx.DOLLAR, b.String()), args...)
		if err != nil {
			return fmt.Errorf("update %d sagas: %w", n, err)
		}
		affected, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("update %d sagas: %w", n, err)
		}
		if affected != int64(n) {
			return fmt.Errorf("update %d sagas: %d matched their row version: %w", n, affected, ErrConflict)
		}
		for _, r := range chunk {
			r.rowVersion++
		}
	}
	return nil
}

// historyChunk bounds the rows of one multi-row insert (SQLite allows 32766 parameters).
const historyChunk = 500

// appendHistory inserts entries in as few statements as it can. The primary key (saga_id, seq)
// makes recording the same transition twice impossible.
func (s *store) appendHistory(ctx context.Context, tx sqlx.ExtContext, entries []HistoryEntry) error {
	for len(entries) > 0 {
		n := min(len(entries), historyChunk)
		chunk := entries[:n]
		entries = entries[n:]
		var b strings.Builder
		b.WriteString(`INSERT INTO sagaflow_history (saga_id, seq, at, kind, step, attempt, action, outcome, actor, detail) VALUES `)
		args := make([]any, 0, n*10)
		for i := range chunk {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
			h := &chunk[i]
			var detail any
			if len(h.Detail) > 0 {
				detail = string(h.Detail)
			}
			args = append(args, h.SagaID, h.Seq, h.At.UTC(), string(h.Kind), h.Step, h.Attempt, h.Action, h.Outcome, h.Actor, detail)
		}
		if _, err := tx.ExecContext(ctx, sqlx.Rebind(bindOf(s.dialect), b.String()), args...); err != nil {
			return fmt.Errorf("append saga history: %w", err)
		}
	}
	return nil
}

// postpone moves the deadline column of ids (not their state) to until.
func (s *store) postpone(ctx context.Context, tx *sqlx.Tx, ids []string, until time.Time) error {
	if len(ids) == 0 {
		return nil
	}
	q, args, err := sqlx.In(`UPDATE sagaflow_instances SET deadline = ? WHERE id IN (?)`, until.UTC(), ids)
	if err != nil {
		return fmt.Errorf("postpone deadlines: %w", err)
	}
	if _, err := tx.ExecContext(ctx, tx.Rebind(q), args...); err != nil {
		return fmt.Errorf("postpone deadlines: %w", err)
	}
	return nil
}

// notifyTimers wakes the timers of every replica listening on PostgreSQL, when tx commits.
func (s *store) notifyTimers(ctx context.Context, tx sqlx.ExtContext) error {
	if s.dialect != sqldb.Postgres {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `SELECT pg_notify('`+timerChannel+`', '')`); err != nil {
		return fmt.Errorf("notify timers: %w", err)
	}
	return nil
}

// get returns the instance with id, or ErrNotFound.
func (s *store) get(ctx context.Context, db sqlx.QueryerContext, id string) (*row, error) {
	rows, err := s.selectRows(ctx, db, sqlx.Rebind(bindOf(s.dialect), `SELECT `+recordColumns+` FROM sagaflow_instances WHERE id = ?`), id)
	if err != nil {
		return nil, err
	}
	r, ok := rows[id]
	if !ok {
		return nil, fmt.Errorf("saga %s: %w", id, ErrNotFound)
	}
	return r, nil
}

// where returns the WHERE clause (empty or starting with " WHERE") and its arguments for f's
// filters; withStatus false leaves f.Status and the cursor out (for counts by status).
func (f Filter) where(withStatus bool) (string, []any) {
	var conds []string
	var args []any
	add := func(cond string, v any) {
		conds = append(conds, cond)
		args = append(args, v)
	}
	if f.Definition != "" {
		add("definition = ?", f.Definition)
	}
	if f.Version != 0 {
		add("version = ?", f.Version)
	}
	if f.BusinessKey != "" {
		add("business_key = ?", f.BusinessKey)
	}
	// Ids are UUIDv7: their text sorts by the start time to the millisecond, so a time range is a
	// range of the primary key (no index on created_at needed, same text on both dialects).
	if !f.StartedAfter.IsZero() {
		add("id >= ?", idFloor(f.StartedAfter))
	}
	if !f.StartedBefore.IsZero() {
		add("id < ?", idFloor(f.StartedBefore))
	}
	if f.NeedsAttention {
		conds = append(conds, "attention <> ''")
	}
	if withStatus {
		if f.Status != "" {
			add("status = ?", f.Status)
		}
		if f.Before != "" {
			add("id < ?", f.Before)
		}
	}
	if len(conds) == 0 {
		return "", nil
	}
	return " WHERE " + strings.Join(conds, " AND "), args
}

// idFloor is the smallest UUIDv7 text of an instance started at t (to the millisecond).
func idFloor(t time.Time) string {
	ms := max(t.UnixMilli(), 0)
	return fmt.Sprintf("%08x-%04x-0000-0000-000000000000", uint64(ms)>>16, uint64(ms)&0xffff)
}

// list returns the instances f selects, newest first.
func (s *store) list(ctx context.Context, db sqlx.QueryerContext, f Filter) ([]Instance, error) {
	where, args := f.where(true)
	q := `SELECT ` + recordColumns + ` FROM sagaflow_instances` + where + ` ORDER BY id DESC LIMIT ?`
	args = append(args, f.Limit)
	var recs []record
	if err := sqlx.SelectContext(ctx, db, &recs, sqlx.Rebind(bindOf(s.dialect), q), args...); err != nil {
		return nil, fmt.Errorf("list sagas: %w", sqldb.Translate(err))
	}
	out := make([]Instance, 0, len(recs))
	for i := range recs {
		r, err := recs[i].row()
		if err != nil {
			return nil, err
		}
		out = append(out, r.public())
	}
	return out, nil
}

// summaryRecord is the columns of a Summary. The fields read from the state document are extracted
// by the database (->> on both dialects), so the document itself, with the saga's input and
// outputs, never leaves it; its times are the instance's own (the columns round them to the
// microsecond on PostgreSQL).
type summaryRecord struct {
	ID          string         `db:"id"`
	Definition  string         `db:"definition"`
	Version     int            `db:"version"`
	BusinessKey string         `db:"business_key"`
	Status      string         `db:"status"`
	Step        sql.NullInt64  `db:"step"`
	Attempt     sql.NullInt64  `db:"attempt"`
	LastError   sql.NullString `db:"last_error"`
	Deadline    sql.NullString `db:"deadline"`
	CreatedAt   sql.NullString `db:"created_at"`
	UpdatedAt   sql.NullString `db:"updated_at"`
	FinishedAt  sql.NullString `db:"finished_at"`
	TraceID     string         `db:"trace_id"`
	Attention   string         `db:"attention"`
}

const summaryColumns = `id, definition, version, business_key, status, state->>'step' AS step,
	state->>'attempt' AS attempt, state->>'last_error' AS last_error, state->>'deadline' AS deadline,
	state->>'created_at' AS created_at, state->>'updated_at' AS updated_at,
	state->>'finished_at' AS finished_at, trace_id, attention`

// summaryPagePostgres reads the same columns with one jsonb_to_record per row: on PostgreSQL each
// ->> reads the whole document again (detoasting it, 100 KB for a saga with a 100 KB input), so
// seven of them cost seven times one (measured in psql on 2,000 rows of 100 KB documents: a page
// of 1000 took 2.7-3.0 s with ->>, 0.33-0.42 s with jsonb_to_record). The page is chosen first,
// in the subquery, so that whatever plan the filters lead to, only its rows' documents are read.
// %s is the WHERE clause of the filters.
const summaryPagePostgres = `SELECT id, definition, version, business_key, status, s.step, s.attempt, s.last_error,
	s.deadline, s.created_at, s.updated_at, s.finished_at, trace_id, attention
FROM (SELECT id, definition, version, business_key, status, state, trace_id, attention
	FROM sagaflow_instances%s ORDER BY id DESC LIMIT ?) AS page,
	jsonb_to_record(page.state) AS s(step bigint, attempt bigint, last_error text, deadline text,
	created_at text, updated_at text, finished_at text)
ORDER BY id DESC`

// summaries returns the summaries of the instances f selects, newest first.
func (s *store) summaries(ctx context.Context, db sqlx.QueryerContext, f Filter) ([]Summary, error) {
	where, args := f.where(true)
	q := `SELECT ` + summaryColumns + ` FROM sagaflow_instances` + where + ` ORDER BY id DESC LIMIT ?`
	if s.dialect == sqldb.Postgres {
		q = fmt.Sprintf(summaryPagePostgres, where)
	}
	args = append(args, f.Limit)
	var recs []summaryRecord
	if err := sqlx.SelectContext(ctx, db, &recs, sqlx.Rebind(bindOf(s.dialect), q), args...); err != nil {
		return nil, fmt.Errorf("list sagas: %w", sqldb.Translate(err))
	}
	out := make([]Summary, len(recs))
	for i := range recs {
		r := &recs[i]
		sum := Summary{ID: r.ID, Definition: r.Definition, Version: r.Version, BusinessKey: r.BusinessKey,
			Status: saga.Status(r.Status), Step: int(r.Step.Int64), Attempt: int(r.Attempt.Int64), LastError: r.LastError.String,
			TraceID: r.TraceID, NeedsAttention: r.Attention != "", Attention: r.Attention}
		for _, f := range []struct {
			text sql.NullString
			to   *time.Time
		}{{r.Deadline, &sum.Deadline}, {r.CreatedAt, &sum.CreatedAt}, {r.UpdatedAt, &sum.UpdatedAt}, {r.FinishedAt, &sum.FinishedAt}} {
			if !f.text.Valid || f.text.String == "" {
				continue
			}
			at, err := time.Parse(time.RFC3339Nano, f.text.String)
			if err != nil {
				return nil, fmt.Errorf("decode state of saga %s: %w", r.ID, err)
			}
			*f.to = at
		}
		out[i] = sum
	}
	return out, nil
}

// countByStatus counts the instances f selects (its Status, Before and Limit aside) by status.
func (s *store) countByStatus(ctx context.Context, db sqlx.QueryerContext, f Filter) (StatusCounts, error) {
	where, args := f.where(false)
	q := `SELECT status, COUNT(*) AS n FROM sagaflow_instances` + where + ` GROUP BY status`
	var rows []statusCount
	if err := sqlx.SelectContext(ctx, db, &rows, sqlx.Rebind(bindOf(s.dialect), q), args...); err != nil {
		return nil, fmt.Errorf("count sagas: %w", sqldb.Translate(err))
	}
	out := StatusCounts{}
	for _, r := range rows {
		out[saga.Status(r.Status)] = r.N
	}
	return out, nil
}

// history returns the timeline of saga id in order: the entries after sequence number after, at
// most limit of them (0: all).
func (s *store) history(ctx context.Context, db sqlx.QueryerContext, id string, after int64, limit int) ([]HistoryEntry, error) {
	type entry struct {
		SagaID  string    `db:"saga_id"`
		Seq     int64     `db:"seq"`
		At      time.Time `db:"at"`
		Kind    string    `db:"kind"`
		Step    string    `db:"step"`
		Attempt int       `db:"attempt"`
		Action  string    `db:"action"`
		Outcome string    `db:"outcome"`
		Actor   string    `db:"actor"`
		Detail  []byte    `db:"detail"`
	}
	var rows []entry
	q := `SELECT saga_id, seq, at, kind, step, attempt, action, outcome, actor, detail FROM sagaflow_history WHERE saga_id = ? AND seq > ? ORDER BY seq`
	args := []any{id, after}
	if limit > 0 {
		q += ` LIMIT ?`
		args = append(args, limit)
	}
	if err := sqlx.SelectContext(ctx, db, &rows, sqlx.Rebind(bindOf(s.dialect), q), args...); err != nil {
		return nil, fmt.Errorf("read history of saga %s: %w", id, sqldb.Translate(err))
	}
	out := make([]HistoryEntry, len(rows))
	for i := range rows {
		r := &rows[i]
		out[i] = HistoryEntry{SagaID: r.SagaID, Seq: r.Seq, At: r.At.UTC(), Kind: HistoryKind(r.Kind), Step: r.Step,
			Attempt: r.Attempt, Action: r.Action, Outcome: r.Outcome, Actor: r.Actor}
		if len(r.Detail) > 0 {
			out[i].Detail = json.RawMessage(r.Detail)
		}
	}
	return out, nil
}

func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC()
}

// listenTimers LISTENs on dsn and calls wake for every timer notification from any replica, and
// after every reconnection, until ctx is done.
func listenTimers(ctx context.Context, dsn string, wake func()) error {
	l := pq.NewListener(dsn, 100*time.Millisecond, 10*time.Second, nil)
	defer l.Close()
	if err := l.Listen(timerChannel); err != nil {
		return fmt.Errorf("listen for timer notifications: %w", err)
	}
	// A deadline committed by another replica before the LISTEN took effect sent a notification
	// nobody heard: wake once now, so the timers re-read the nearest deadline instead of sleeping
	// until their fallback poll.
	wake()
	// A quiet connection can die unnoticed; pinging it now and then makes the listener reconnect.
	ping := time.NewTicker(90 * time.Second)
	defer ping.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-l.Notify:
			// A nil notification means the connection was re-established and some may have
			// been lost: wake anyway, the timers re-read the nearest deadline.
			wake()
		case <-ping.C:
			_ = l.Ping()
		}
	}
}
