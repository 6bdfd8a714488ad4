package participant

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/dbtest"
	"github.com/sagaflow/sagaflow/internal/natstest"
	"github.com/sagaflow/sagaflow/internal/protocol"
)

// TestBatchRedo: handlers run without savepoints, so a failing handler makes the batch be handled
// again. Whatever the mix, each command's answer is the one a savepoint per handler would give:
// the failed handler is not called again and leaves no write, the others' writes commit once.
func TestBatchRedo(t *testing.T) {
	t.Parallel()
	type want struct {
		outcome protocol.Outcome // "" for a transient error
		effect  bool
		calls   int
	}
	tests := []struct {
		name string
		// handlers by saga id; the batch runs them in saga id order.
		handlers []string
		want     map[string]want
	}{
		{
			name:     "AllSucceedInOnePass",
			handlers: []string{"a-ok", "b-ok", "c-compensate"},
			want: map[string]want{
				"a-ok": {outcome: protocol.OutcomeSuccess, effect: true, calls: 1}, "b-ok": {outcome: protocol.OutcomeSuccess, effect: true, calls: 1},
				"c-compensate": {outcome: protocol.OutcomeSuccess, effect: true, calls: 1},
			},
		},
		{
			name:     "FailureAndErrorAmongSuccesses",
			handlers: []string{"a-ok", "b-fail", "c-error", "d-panic", "e-ok", "f-compensate-fail"},
			want: map[string]want{
				"a-ok":    {outcome: protocol.OutcomeSuccess, effect: true, calls: 2}, // before the first failure: run again
				"b-fail":  {outcome: protocol.OutcomeFailure, calls: 1},
				"c-error": {calls: 1}, "d-panic": {calls: 1},
				"e-ok":              {outcome: protocol.OutcomeSuccess, effect: true, calls: 1},
				"f-compensate-fail": {outcome: protocol.OutcomeFailure, calls: 1},
			},
		},
		{
			name:     "EarlierHandlerFailsWhenRunAgain",
			handlers: []string{"a-flaky", "b-fail", "c-ok"},
			want: map[string]want{
				"a-flaky": {calls: 2}, "b-fail": {outcome: protocol.OutcomeFailure, calls: 1},
				"c-ok": {outcome: protocol.OutcomeSuccess, effect: true, calls: 1},
			},
		},
		{
			name:     "LoneError",
			handlers: []string{"a-error"},
			want:     map[string]want{"a-error": {calls: 1}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
				ctx := t.Context()
				js := natstest.New(t, nil).JetStream(t)
				require.NoError(t, bus.EnsureStreams(ctx, js, bus.StreamsConfig{}))
				require.NoError(t, Migrate(ctx, db))
				_, err := db.ExecContext(ctx, `CREATE TABLE effects (saga_id TEXT NOT NULL)`)
				require.NoError(t, err)
				p, err := New(db, js, &Config{Service: "svc", DisableRelay: true})
				require.NoError(t, err)
				var mu sync.Mutex
				calls := map[string]int{}
				handler := func(ctx context.Context, tx *sqlx.Tx, cmd Command) (Result, error) {
					mu.Lock()
					calls[cmd.SagaID]++
					n := calls[cmd.SagaID]
					mu.Unlock()
					if _, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO effects (saga_id) VALUES (?)`), cmd.SagaID); err != nil {
						return Result{}, err
					}
					switch cmd.SagaID[2:] {
					case "fail", "compensate-fail":
						return Failure("declined"), nil
					case "error":
						return Result{}, errors.New("dependency down")
					case "panic":
						panic("handler bug")
					case "flaky":
						if n > 1 {
							return Result{}, errors.New("flaky")
						}
					}
					return Success(nil), nil
				}
				var batch []*job
				for _, id := range tt.handlers {
					action := protocol.ActionForward
					if id[2:] == "compensate" || id[2:] == "compensate-fail" {
						action = protocol.ActionCompensate
						// The forward succeeded here before, so the compensation runs its handler.
						_, err := db.ExecContext(ctx, db.Rebind(`INSERT INTO sagaflow_barrier (saga_id, step, action, outcome, reason) VALUES (?, 'one', 'forward', 'success', '')`), id)
						require.NoError(t, err)
					}
					cmd := protocol.Command{MessageID: id + "-msg", SagaID: id, Definition: "d", Version: 1, Step: "one", Attempt: 1,
						Action: action, Service: "svc", Name: "Do", ReplyTo: protocol.ReplySubject("d"), Payload: json.RawMessage(`{}`), Time: time.Now()}
					batch = append(batch, &job{cmd: cmd, headers: map[string]string{}, handler: handler})
				}
				results := p.process(ctx, batch) // in batch's order, which process sorts
				require.Len(t, results, len(batch))
				for i, j := range batch {
					id, w := j.cmd.SagaID, tt.want[j.cmd.SagaID]
					err := results[i]
					if w.outcome == "" {
						require.Error(t, err, id)
					} else {
						require.NoError(t, err, id)
						require.Equal(t, w.outcome, j.outcome, id)
					}
					var effects int
					require.NoError(t, db.GetContext(ctx, &effects, db.Rebind(`SELECT COUNT(*) FROM effects WHERE saga_id = ?`), id))
					require.Equal(t, map[bool]int{true: 1}[w.effect], effects, "%s: its writes commit once, or not at all", id)
					require.Equal(t, w.calls, calls[id], "%s: handler calls", id)
					var recorded int
					require.NoError(t, db.GetContext(ctx, &recorded, db.Rebind(`SELECT COUNT(*) FROM sagaflow_barrier WHERE saga_id = ? AND action = ?`), id, string(j.cmd.Action)))
					wantRecorded := 0
					if w.outcome != "" && (j.cmd.Action != protocol.ActionCompensate || w.outcome != protocol.OutcomeFailure) {
						wantRecorded = 1 // a failed compensation is not recorded, so its retry runs again
					}
					require.Equal(t, wantRecorded, recorded, "%s: barrier record", id)
				}
				var replies int
				require.NoError(t, db.GetContext(ctx, &replies, `SELECT COUNT(*) FROM sagaflow_outbox WHERE subject = 'saga.reply.d'`))
				require.Len(t, tt.want, replies, "one reply per command: its answer, or the news of its failed handling")
			})
		})
	}
}
