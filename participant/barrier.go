package participant

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/jmoiron/sqlx"

	"github.com/sagaflow/sagaflow/internal/protocol"
)

// The barrier's storage. Every query is written once with ? placeholders and rebound for the
// dialect; PostgreSQL and SQLite (3.35+) share the syntax used here — INSERT … ON CONFLICT DO
// NOTHING/DO UPDATE, RETURNING, row values in IN — so there is no dialect branch.
//
// The primary key is the lock. A transaction inserting a key that another open transaction has
// inserted waits, on PostgreSQL, until that one commits (then its insert does nothing) or rolls back
// (then it inserts); on SQLite write transactions are serialised (IMMEDIATE). So two replicas that
// receive the same command at once never both run its handler.
const (
	claimHead   = `INSERT INTO sagaflow_barrier (saga_id, step, action, outcome, reason) VALUES `
	claimTail   = ` ON CONFLICT DO NOTHING RETURNING saga_id, step`
	selectHead  = `SELECT saga_id, step, outcome, output, reason FROM sagaflow_barrier WHERE action = ? AND (saga_id, step) IN (`
	recordHead  = `INSERT INTO sagaflow_barrier (saga_id, step, action, outcome, output, reason) VALUES `
	recordTail  = ` ON CONFLICT (saga_id, step, action) DO UPDATE SET outcome = excluded.outcome, output = excluded.output, reason = excluded.reason`
	forgetQuery = `DELETE FROM sagaflow_barrier WHERE saga_id = ? AND step = ? AND action = ?`
)

// outcomePending marks a barrier row claimed by a transaction that has not decided yet; the same
// transaction always replaces it before it commits.
const outcomePending = "pending"

// Reasons the barrier gives in the replies it makes without calling a handler.
const (
	reasonTombstone = "compensated before the command arrived"
	reasonRefused   = "refused: the step was already compensated here"
)

// rowsPerStatement bounds a multi-row statement (6 parameters a row) under both databases'
// parameter limits.
const rowsPerStatement = 500

// key identifies a barrier row of one action.
type key struct{ sagaID, step string }

// keyOf is the barrier key of c: its saga and step and, from an operator's first retry of the step
// after a failure on, the step's retry generation, stored in the step column as "<step>#<n>" (step
// names cannot contain '#'). Generation 0 is the plain step name, as before generations existed.
// A retried step is thus a new action here: its handler runs again (the failure of the generation
// before left no effect), while every guarantee holds within a generation — a duplicate is
// answered from the record, a compensation of a generation that never ran is a null compensation,
// and a forward arriving after its generation's compensation is refused.
func keyOf(c *protocol.Command) key {
	if c.Generation == 0 {
		return key{c.SagaID, c.Step}
	}
	return key{c.SagaID, c.Step + "#" + strconv.Itoa(c.Generation)}
}

// record is one barrier row.
type record struct {
	SagaID  string         `db:"saga_id"`
	Step    string         `db:"step"`
	Outcome string         `db:"outcome"`
	Output  sql.NullString `db:"output"`
	Reason  string         `db:"reason"`
}

// result is the answer a record gives to a repeated command.
func (r record) result() (Result, error) {
	res := Result{outcome: protocol.Outcome(r.Outcome), reason: r.Reason}
	switch res.outcome {
	case protocol.OutcomeSuccess:
		if r.Output.Valid {
			res.output = json.RawMessage(r.Output.String)
		}
	case protocol.OutcomeFailure:
	case protocol.OutcomeCancelled:
		res.reason = reasonRefused
	default:
		return Result{}, fmt.Errorf("%w: step %s of saga %s has outcome %q", ErrBarrierState, r.Step, r.SagaID, r.Outcome)
	}
	return res, nil
}

// barrier runs the barrier's statements in a transaction.
type barrier struct {
	tx *sqlx.Tx
}

func placeholders(rows, cols int) string {
	one := "(" + strings.TrimSuffix(strings.Repeat("?, ", cols), ", ") + ")"
	return strings.TrimSuffix(strings.Repeat(one+", ", rows), ", ")
}

// claim inserts a pending row of action for each key that has none and reports which it inserted.
func (b barrier) claim(ctx context.Context, action protocol.Action, outcome, reason string, keys []key) (map[key]bool, error) {
	claimed := make(map[key]bool, len(keys))
	for start := 0; start < len(keys); start += rowsPerStatement {
		part := keys[start:min(start+rowsPerStatement, len(keys))]
		args := make([]any, 0, 5*len(part))
		for _, k := range part {
			args = append(args, k.sagaID, k.step, string(action), outcome, reason)
		}
		q := b.tx.Rebind(claimHead + placeholders(len(part), 5) + claimTail)
		var inserted []struct {
			SagaID string `db:"saga_id"`
			Step   string `db:"step"`
		}
		if err := b.tx.SelectContext(ctx, &inserted, q, args...); err != nil {
			return nil, fmt.Errorf("barrier: claim %d %s action(s): %w", len(part), action, err)
		}
		for _, r := range inserted {
			claimed[key{sagaID: r.SagaID, step: r.Step}] = true
		}
	}
	return claimed, nil
}

// load reads the records of action for keys.
func (b barrier) load(ctx context.Context, action protocol.Action, keys []key) (map[key]record, error) {
	out := make(map[key]record, len(keys))
	for start := 0; start < len(keys); start += rowsPerStatement {
		part := keys[start:min(start+rowsPerStatement, len(keys))]
		args := make([]any, 0, 1+2*len(part))
		args = append(args, string(action))
		for _, k := range part {
			args = append(args, k.sagaID, k.step)
		}
		var recs []record
		q := b.tx.Rebind(selectHead + placeholders(len(part), 2) + ")")
		if err := b.tx.SelectContext(ctx, &recs, q, args...); err != nil {
			return nil, fmt.Errorf("barrier: read %d %s record(s): %w", len(part), action, err)
		}
		for _, r := range recs {
			out[key{r.SagaID, r.Step}] = r
		}
	}
	return out, nil
}

// decided is an outcome to store in the barrier.
type decided struct {
	key    key
	action protocol.Action
	res    Result
}

// record stores outcomes, replacing the pending rows.
func (b barrier) record(ctx context.Context, ds []decided) error {
	for start := 0; start < len(ds); start += rowsPerStatement {
		part := ds[start:min(start+rowsPerStatement, len(ds))]
		args := make([]any, 0, 6*len(part))
		for _, d := range part {
			var output sql.NullString
			if d.res.output != nil {
				output = sql.NullString{String: string(d.res.output), Valid: true}
			}
			args = append(args, d.key.sagaID, d.key.step, string(d.action), string(d.res.outcome), output, d.res.reason)
		}
		q := b.tx.Rebind(recordHead + placeholders(len(part), 6) + recordTail)
		if _, err := b.tx.ExecContext(ctx, q, args...); err != nil {
			return fmt.Errorf("barrier: record %d outcome(s): %w", len(part), err)
		}
	}
	return nil
}

// forget deletes the record of action for k (its row stays locked until the transaction ends).
func (b barrier) forget(ctx context.Context, k key, action protocol.Action) error {
	if _, err := b.tx.ExecContext(ctx, b.tx.Rebind(forgetQuery), k.sagaID, k.step, string(action)); err != nil {
		return fmt.Errorf("barrier: forget %s of step %s: %w", action, k.step, err)
	}
	return nil
}
