package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/dbtest"
	"github.com/sagaflow/sagaflow/internal/migrate"
	"github.com/sagaflow/sagaflow/internal/protocol"
	"github.com/sagaflow/sagaflow/internal/sqldb"
	"github.com/sagaflow/sagaflow/internal/sqlitetest"
	"github.com/sagaflow/sagaflow/saga"
)

// TestStore is the conformance suite of the engine's storage: every subtest runs on PostgreSQL and
// on SQLite, driving the engine without a bus (replies and deadlines are applied directly, with a
// hand-driven clock).
func TestStore(t *testing.T) {
	t.Parallel()
	const timeout = time.Second
	setup := func(t *testing.T, db *sqlx.DB) (*Engine, *clock) {
		c := newClock()
		e := newEngine(t, db, Config{Definitions: registry(t, orderDefinition(t, "order", timeout), orderDefinition(t, "other", timeout)), Now: c.Now, Rand: func() float64 { return 0.5 }})
		return e, c
	}

	t.Run("MigrationsNumbered", func(t *testing.T) {
		t.Parallel()
		for _, d := range []sqldb.Dialect{sqldb.Postgres, sqldb.SQLite} {
			files, err := migrate.Files(migrations, d)
			require.NoError(t, err)
			require.NotEmpty(t, files)
		}
	})

	t.Run("MigrateTwice", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			require.NoError(t, Migrate(t.Context(), db))
			require.NoError(t, Migrate(t.Context(), db))
			var n int
			require.NoError(t, db.Get(&n, `SELECT COUNT(*) FROM sagaflow_instances`))
			require.Zero(t, n)
		})
	})

	t.Run("StartAndGet", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			e, c := setup(t, db)
			id, err := e.Start(t.Context(), "order", "order-1", json.RawMessage(`{"amount":42}`), StartOptions{Actor: "test"})
			require.NoError(t, err)
			u, err := uuid.Parse(id)
			require.NoError(t, err)
			require.Equal(t, uuid.Version(7), u.Version())

			inst := get(t, e, id)
			require.Equal(t, saga.StatusRunning, inst.Status)
			require.Equal(t, "order", inst.Definition)
			require.Equal(t, "order-1", inst.BusinessKey)
			require.Equal(t, 0, inst.Step)
			require.Equal(t, 1, inst.Attempt)
			require.JSONEq(t, `{"amount":42}`, string(inst.Data.Input))
			require.Regexp(t, regexp.MustCompile(`^[0-9a-f]{32}$`), inst.TraceID)
			require.Equal(t, int64(1), inst.RowVersion)
			require.True(t, inst.Deadline.Equal(c.Now().Add(timeout)), "deadline %s", inst.Deadline)
			rendered, err := json.Marshal(inst)
			require.NoError(t, err)
			var fields map[string]any
			require.NoError(t, json.Unmarshal(rendered, &fields))
			require.Equal(t, id, fields["id"])
			require.Equal(t, "running", fields["status"])
			require.Equal(t, inst.TraceID, fields["trace_id"])

			h := history(t, e, id)
			require.Equal(t, []string{"started", "command create-order 1 forward"}, kinds(h))
			require.Equal(t, "test", h[0].Actor)

			// The first command is in the outbox, with the saga's headers and trace id.
			var rows []struct {
				MessageID string `db:"message_id"`
				Subject   string `db:"subject"`
				Headers   []byte `db:"headers"`
				Payload   []byte `db:"payload"`
			}
			require.NoError(t, db.Select(&rows, `SELECT message_id, subject, headers, payload FROM sagaflow_outbox`))
			require.Len(t, rows, 1)
			require.Equal(t, "saga.cmd.order.CreateOrder", rows[0].Subject)
			require.Equal(t, commandID(id, "create-order", "forward", 1), rows[0].MessageID)
			var headers map[string]string
			require.NoError(t, json.Unmarshal(rows[0].Headers, &headers))
			require.Equal(t, id, headers[protocol.HeaderSagaID])
			require.Equal(t, "saga.reply.order", headers[protocol.HeaderReplyTo])
			require.Equal(t, "1", headers[protocol.HeaderAttempt])
			require.Equal(t, "forward", headers[protocol.HeaderAction])
			require.Regexp(t, "^00-"+inst.TraceID+"-[0-9a-f]{16}-01$", headers[protocol.HeaderTraceparent])
			require.JSONEq(t, `{"input":{"amount":42},"steps":{}}`, string(rows[0].Payload))
		})
	})

	t.Run("IdempotentStart", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			e, _ := setup(t, db)
			opts := StartOptions{IdempotencyKey: "request-1"}
			first, err := e.Start(t.Context(), "order", "k", nil, opts)
			require.NoError(t, err)
			again, err := e.Start(t.Context(), "order", "k", nil, opts)
			require.NoError(t, err)
			require.Equal(t, first, again)
			other, err := e.Start(t.Context(), "other", "k", nil, opts)
			require.NoError(t, err)
			require.NotEqual(t, first, other, "the key is per definition")

			// Concurrent starts with one key start one instance.
			var wg sync.WaitGroup
			ids := make([]string, 8)
			errs := make([]error, 8)
			for i := range ids {
				wg.Go(func() {
					ids[i], errs[i] = e.Start(t.Context(), "order", "k", nil, StartOptions{IdempotencyKey: "request-2"})
				})
			}
			wg.Wait()
			for i := range ids {
				require.NoError(t, errs[i])
				require.Equal(t, ids[0], ids[i])
			}
			var n, outboxRows int
			require.NoError(t, db.Get(&n, `SELECT COUNT(*) FROM sagaflow_instances`))
			require.Equal(t, 3, n)
			require.NoError(t, db.Get(&outboxRows, `SELECT COUNT(*) FROM sagaflow_outbox`))
			require.Equal(t, 3, outboxRows, "one first command per instance")
			require.Equal(t, "request-1", get(t, e, first).IdempotencyKey)
		})
	})

	t.Run("StartTx", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			e, _ := setup(t, db)
			tx, err := db.BeginTxx(t.Context(), nil)
			require.NoError(t, err)
			rolledBack, err := e.StartTx(t.Context(), tx, "order", "k", nil, StartOptions{})
			require.NoError(t, err)
			require.NoError(t, tx.Rollback())
			_, err = e.Get(t.Context(), rolledBack)
			require.ErrorIs(t, err, ErrNotFound)

			tx, err = db.BeginTxx(t.Context(), nil)
			require.NoError(t, err)
			committed, err := e.StartTx(t.Context(), tx, "order", "k", nil, StartOptions{})
			require.NoError(t, err)
			require.NoError(t, tx.Commit())
			require.Equal(t, saga.StatusRunning, get(t, e, committed).Status)
			var outboxRows int
			require.NoError(t, db.Get(&outboxRows, `SELECT COUNT(*) FROM sagaflow_outbox`))
			require.Equal(t, 1, outboxRows)
		})
	})

	t.Run("StartErrors", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			e, _ := setup(t, db)
			_, err := e.Start(t.Context(), "missing", "k", nil, StartOptions{})
			require.ErrorIs(t, err, definitions.ErrNotFound)
			_, err = e.Start(t.Context(), "order", "k", nil, StartOptions{Version: 9})
			require.ErrorIs(t, err, definitions.ErrNotFound)
			_, err = e.Start(t.Context(), "order", "k", json.RawMessage(`{not json`), StartOptions{})
			require.ErrorIs(t, err, ErrInvalidInput)
		})
	})

	t.Run("NotFound", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			e, _ := setup(t, db)
			const id = "01900000-0000-7000-8000-000000000000"
			_, err := e.Get(t.Context(), id)
			require.ErrorIs(t, err, ErrNotFound)
			_, err = e.History(t.Context(), id)
			require.ErrorIs(t, err, ErrNotFound)
			_, err = e.Wait(t.Context(), id)
			require.ErrorIs(t, err, ErrNotFound)
			require.ErrorIs(t, e.Cancel(t.Context(), id, "a", "r"), ErrNotFound)
			require.ErrorIs(t, e.Redrive(t.Context(), id, "a", "r"), ErrNotFound)
			_, err = e.GetByKey(t.Context(), "order", "nobody")
			require.ErrorIs(t, err, ErrNotFound)
		})
	})

	t.Run("ListAndGetByKey", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			e, _ := setup(t, db)
			var ids []string
			for i := range 5 {
				def := "order"
				if i%2 == 1 {
					def = "other"
				}
				id, err := e.Start(t.Context(), def, fmt.Sprintf("key-%d", i%3), nil, StartOptions{})
				require.NoError(t, err)
				ids = append(ids, id) // ids[0..4]: order key-0, other key-1, order key-2, other key-0, order key-1
			}
			require.NoError(t, e.Cancel(t.Context(), ids[2], "alice", "test"))

			idsOf := func(list []Instance) []string {
				out := make([]string, len(list))
				for i := range list {
					out[i] = list[i].ID
				}
				return out
			}
			all, err := e.List(t.Context(), Filter{})
			require.NoError(t, err)
			require.Equal(t, []string{ids[4], ids[3], ids[2], ids[1], ids[0]}, idsOf(all), "newest first")

			byDef, err := e.List(t.Context(), Filter{Definition: "order"})
			require.NoError(t, err)
			require.Equal(t, []string{ids[4], ids[2], ids[0]}, idsOf(byDef))
			byStatus, err := e.List(t.Context(), Filter{Status: "compensating"})
			require.NoError(t, err)
			require.Equal(t, []string{ids[2]}, idsOf(byStatus))
			byKey, err := e.List(t.Context(), Filter{BusinessKey: "key-0"})
			require.NoError(t, err)
			require.Equal(t, []string{ids[3], ids[0]}, idsOf(byKey))

			page1, err := e.List(t.Context(), Filter{Limit: 2})
			require.NoError(t, err)
			require.Equal(t, []string{ids[4], ids[3]}, idsOf(page1))
			page2, err := e.List(t.Context(), Filter{Limit: 2, Before: page1[1].ID})
			require.NoError(t, err)
			require.Equal(t, []string{ids[2], ids[1]}, idsOf(page2))

			newest, err := e.GetByKey(t.Context(), "order", "key-1")
			require.NoError(t, err)
			require.Equal(t, ids[4], newest.ID)
			second, err := e.Start(t.Context(), "order", "key-1", nil, StartOptions{})
			require.NoError(t, err)
			newest, err = e.GetByKey(t.Context(), "order", "key-1")
			require.NoError(t, err)
			require.Equal(t, second, newest.ID, "the newest instance with the key")
		})
	})

	t.Run("Replies", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			e, _ := setup(t, db)
			id, err := e.Start(t.Context(), "order", "k", json.RawMessage(`{"n":1}`), StartOptions{})
			require.NoError(t, err)

			created := reply(id, "order", "create-order", 1, false, protocol.OutcomeSuccess, `{"order_id":7}`)
			require.Equal(t, []error{nil}, applyReplies(t, e, created))
			inst := get(t, e, id)
			require.Equal(t, 1, inst.Step)
			require.JSONEq(t, `{"order_id":7}`, string(inst.Data.Steps["create-order"]))

			// The same reply again (same message id): recorded as ignored, not applied.
			require.Equal(t, []error{nil}, applyReplies(t, e, created))
			// A reply for an attempt never sent cannot be a participant's answer: dead-lettered.
			forged := reply(id, "order", "create-order", 2, false, protocol.OutcomeSuccess, `{}`)
			verdicts := applyReplies(t, e, forged)
			require.ErrorIs(t, verdicts[0], bus.ErrPermanent)
			require.ErrorIs(t, verdicts[0], ErrUntrustedReply)
			after := get(t, e, id)
			require.Equal(t, inst.Instance, after.Instance, "ignored and refused replies change nothing")

			h := history(t, e, id)
			require.Equal(t, []string{
				"started", "command create-order 1 forward",
				"reply create-order 1 forward success", "command reserve-inventory 1 forward",
				"ignored create-order 1 forward success",
			}, kinds(h))
			require.Contains(t, string(h[4].Detail), "duplicate")

			// A reply for a saga that does not exist goes to the dead-letter stream.
			unknown := reply("01900000-0000-7000-8000-000000000000", "order", "create-order", 1, false, protocol.OutcomeSuccess, `{}`)
			// Two replies for one saga in one batch apply in order, beside the unknown one.
			reserved := reply(id, "order", "reserve-inventory", 1, false, protocol.OutcomeSuccess, `{"reserved":true}`)
			charged := reply(id, "order", "charge-payment", 1, false, protocol.OutcomeSuccess, `{"charged":true}`)
			verdicts = applyReplies(t, e, reserved, unknown, charged)
			require.NoError(t, verdicts[0])
			require.ErrorIs(t, verdicts[1], bus.ErrPermanent)
			require.NoError(t, verdicts[2])
			inst = get(t, e, id)
			require.Equal(t, saga.StatusCompleted, inst.Status)
			require.True(t, inst.Deadline.IsZero())
			require.Equal(t, []string{
				"reply reserve-inventory 1 forward success", "command charge-payment 1 forward",
				"reply charge-payment 1 forward success", "finished completed",
			}, kinds(history(t, e, id))[5:])
			next, err := e.store.nextDeadline(t.Context(), db)
			require.NoError(t, err)
			require.True(t, next.IsZero(), "a finished saga has no deadline")
		})
	})

	t.Run("BusinessFailureCompensatesInReverse", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			e, _ := setup(t, db)
			id, err := e.Start(t.Context(), "order", "k", nil, StartOptions{})
			require.NoError(t, err)
			applyReplies(t, e,
				reply(id, "order", "create-order", 1, false, protocol.OutcomeSuccess, `{}`),
				reply(id, "order", "reserve-inventory", 1, false, protocol.OutcomeSuccess, `{}`),
				reply(id, "order", "charge-payment", 1, false, protocol.OutcomeFailure, ``))
			require.Equal(t, saga.StatusCompensating, get(t, e, id).Status)
			applyReplies(t, e, reply(id, "order", "reserve-inventory", 1, true, protocol.OutcomeSuccess, ``))
			applyReplies(t, e, reply(id, "order", "create-order", 1, true, protocol.OutcomeSuccess, ``))
			require.Equal(t, saga.StatusCompensated, get(t, e, id).Status)
			var subjects []string
			require.NoError(t, db.Select(&subjects, `SELECT subject FROM sagaflow_outbox ORDER BY seq`))
			require.Equal(t, []string{
				"saga.cmd.order.CreateOrder", "saga.cmd.inventory.ReserveInventory", "saga.cmd.payment.ChargePayment",
				"saga.cmd.inventory.ReleaseInventory", "saga.cmd.order.CancelOrder",
			}, subjects)
		})
	})

	t.Run("Timers", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			e, c := setup(t, db)
			id, err := e.Start(t.Context(), "order", "k", nil, StartOptions{})
			require.NoError(t, err)
			next, err := e.store.nextDeadline(t.Context(), db)
			require.NoError(t, err)
			require.True(t, next.Equal(c.Now().Add(timeout)), "next deadline %s", next)

			fire := func() {
				t.Helper()
				_, err := e.fireDue(t.Context())
				require.NoError(t, err)
			}
			fire() // nothing due yet
			require.Equal(t, 1, get(t, e, id).Attempt)

			c.Advance(timeout) // attempt 1 times out; retry after the backoff (timeout/10)
			fire()
			inst := get(t, e, id)
			require.Equal(t, saga.PhaseBackingOff, inst.Phase)
			c.Advance(timeout / 10) // the backoff ends: attempt 2 goes out
			fire()
			require.Equal(t, 2, get(t, e, id).Attempt)
			c.Advance(timeout) // attempt 2 times out: no attempt left, compensate the step itself
			fire()
			inst = get(t, e, id)
			require.Equal(t, saga.StatusCompensating, inst.Status)

			// The compensation succeeds; a late reply to forward attempt 2 is then ignored.
			applyReplies(t, e, reply(id, "order", "create-order", 1, true, protocol.OutcomeSuccess, ``))
			require.Equal(t, saga.StatusCompensated, get(t, e, id).Status)
			applyReplies(t, e, reply(id, "order", "create-order", 2, false, protocol.OutcomeSuccess, `{}`))
			require.Equal(t, saga.StatusCompensated, get(t, e, id).Status)
			c.Advance(time.Hour)
			fire() // nothing pending: no change
			require.Equal(t, []string{
				"started", "command create-order 1 forward",
				"timeout create-order 1 forward", "retry_scheduled create-order 2 forward",
				"command create-order 2 forward",
				"timeout create-order 2 forward", "command create-order 1 compensate",
				"reply create-order 1 compensate success", "finished compensated",
				"ignored create-order 2 forward success",
			}, kinds(history(t, e, id)))
		})
	})

	t.Run("TimersPostponeUnknownDefinitions", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			e, c := setup(t, db)
			// A replica that knows only "other" shares the database.
			partial := newEngine(t, db, Config{Definitions: registry(t, orderDefinition(t, "other", timeout)), Now: c.Now})
			unknown, err := e.Start(t.Context(), "order", "k", nil, StartOptions{})
			require.NoError(t, err)
			known, err := e.Start(t.Context(), "other", "k", nil, StartOptions{})
			require.NoError(t, err)
			c.Advance(timeout)
			_, err = partial.fireDue(t.Context())
			require.NoError(t, err)
			require.Equal(t, saga.PhaseBackingOff, get(t, e, known).Phase, "the known saga is not hidden behind the unknown one")
			require.Equal(t, saga.PhaseAwaitingReply, get(t, e, unknown).Phase)
			next, err := e.store.nextDeadline(t.Context(), db)
			require.NoError(t, err)
			require.True(t, next.After(c.Now()), "the unknown saga's deadline is postponed, not due again at once")
			c.Advance(stuckRetry)
			_, err = e.fireDue(t.Context())
			require.NoError(t, err)
			require.Equal(t, saga.PhaseBackingOff, get(t, e, unknown).Phase, "a replica that knows it fires it later")
		})
	})

	t.Run("CancelAndRedrive", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			e, c := setup(t, db)
			id, err := e.Start(t.Context(), "order", "k", nil, StartOptions{})
			require.NoError(t, err)
			require.ErrorIs(t, e.Redrive(t.Context(), id, "bob", "too early"), saga.ErrNotFailed)
			applyReplies(t, e, reply(id, "order", "create-order", 1, false, protocol.OutcomeSuccess, `{}`))
			require.NoError(t, e.Cancel(t.Context(), id, "alice", "customer asked"))
			require.ErrorIs(t, e.Cancel(t.Context(), id, "alice", "again"), saga.ErrCompensating)

			// The step in flight (reserve) is compensated first; its compensation fails on both
			// attempts, so the saga fails.
			applyReplies(t, e, reply(id, "order", "reserve-inventory", 1, true, protocol.OutcomeFailure, ``))
			c.Advance(timeout / 10)
			_, err = e.fireDue(t.Context())
			require.NoError(t, err)
			applyReplies(t, e, reply(id, "order", "reserve-inventory", 2, true, protocol.OutcomeFailure, ``))
			require.Equal(t, saga.StatusFailed, get(t, e, id).Status)

			require.NoError(t, e.Redrive(t.Context(), id, "bob", "inventory fixed"))
			require.Equal(t, saga.StatusCompensating, get(t, e, id).Status)
			applyReplies(t, e, reply(id, "order", "reserve-inventory", 3, true, protocol.OutcomeSuccess, ``))
			applyReplies(t, e, reply(id, "order", "create-order", 1, true, protocol.OutcomeSuccess, ``))
			require.Equal(t, saga.StatusCompensated, get(t, e, id).Status)

			h := history(t, e, id)
			var cancel, redrive *HistoryEntry
			for i := range h {
				switch h[i].Kind {
				case HistoryCancel:
					cancel = &h[i]
				case HistoryRedrive:
					redrive = &h[i]
				}
			}
			require.NotNil(t, cancel)
			require.Equal(t, "alice", cancel.Actor)
			require.JSONEq(t, `{"reason":"customer asked"}`, string(cancel.Detail))
			require.NotNil(t, redrive)
			require.Equal(t, "bob", redrive.Actor)
			require.JSONEq(t, `{"reason":"inventory fixed"}`, string(redrive.Detail))
			require.Contains(t, kinds(h), "finished failed")
			require.Equal(t, "finished compensated", kinds(h)[len(h)-1])
		})
	})

	t.Run("ConcurrentRepliesApplyOnce", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			e, _ := setup(t, db)
			id, err := e.Start(t.Context(), "order", "k", nil, StartOptions{})
			require.NoError(t, err)
			// Eight copies of one answer, each with its own message id, from eight goroutines.
			var wg sync.WaitGroup
			for i := range 8 {
				wg.Go(func() {
					r := reply(id, "order", "create-order", 1, false, protocol.OutcomeSuccess, `{}`)
					r.MessageID = fmt.Sprintf("copy-%d", i)
					for _, v := range applyReplies(t, e, r) {
						if v != nil && !errors.Is(v, ErrConflict) {
							t.Errorf("verdict: %v", v)
						}
					}
				})
			}
			wg.Wait()
			n := map[HistoryKind]int{}
			for _, h := range history(t, e, id) {
				n[h.Kind]++
			}
			require.Equal(t, 1, n[HistoryReply], "applied once")
			require.Equal(t, 7, n[HistoryIgnored], "the others recorded as ignored")
			require.Equal(t, 1, get(t, e, id).Step)
		})
	})
}

// TestMigrateSQLiteFile checks that a database file migrated once is found migrated when reopened.
func TestMigrateSQLiteFile(t *testing.T) {
	t.Parallel()
	path := sqlitetest.Path(t)
	for range 2 {
		db, err := sqldb.Open(t.Context(), "sqlite:"+path)
		require.NoError(t, err)
		require.NoError(t, Migrate(t.Context(), db))
		require.NoError(t, db.Close())
	}
}
