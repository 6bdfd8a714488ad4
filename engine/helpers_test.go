package engine

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/internal/protocol"
	"github.com/sagaflow/sagaflow/saga"
)

// clock is a settable clock for tests that drive the timers by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// orderDefinition is a three-step saga: create-order → reserve-inventory → charge-payment, every
// step compensable, with the given step timeout, 2 attempts per step and 2 per compensation.
func orderDefinition(t testing.TB, name string, timeout time.Duration) *saga.Definition {
	t.Helper()
	retry := saga.RetryPolicy{MaxAttempts: 2, Backoff: timeout / 10, MaxBackoff: timeout / 10, Jitter: definitions.NoJitter}
	d, err := definitions.New(name, 1).
		DefaultTimeout(timeout).
		DefaultRetry(retry).
		DefaultCompensationRetry(retry).
		Step("create-order", "order", "CreateOrder").Compensation("CancelOrder").
		Step("reserve-inventory", "inventory", "ReserveInventory").Compensation("ReleaseInventory").
		Step("charge-payment", "payment", "ChargePayment").Compensation("RefundPayment").
		Build()
	require.NoError(t, err)
	return d
}

func registry(t testing.TB, defs ...*saga.Definition) *definitions.Registry {
	t.Helper()
	r := definitions.NewRegistry()
	for _, d := range defs {
		require.NoError(t, r.Register(d))
	}
	return r
}

// newEngine migrates db and returns an Engine on it with cfg's non-zero fields.
func newEngine(t testing.TB, db *sqlx.DB, cfg Config) *Engine {
	t.Helper()
	require.NoError(t, Migrate(t.Context(), db))
	if db.DriverName() == "postgres" {
		db.SetMaxOpenConns(8) // the test server is shared with every other test
	}
	cfg.DB = db
	e, err := New(cfg)
	require.NoError(t, err)
	return e
}

// reply builds a reply to the command of (saga, step, attempt, action).
func reply(sagaID, definition, step string, attempt int, compensate bool, outcome protocol.Outcome, output string) protocol.Reply {
	action := protocol.ActionForward
	if compensate {
		action = protocol.ActionCompensate
	}
	r := protocol.Reply{
		MessageID: commandID(sagaID, step, string(action), attempt) + "-reply-" + string(outcome), SagaID: sagaID,
		Definition: definition, Step: step, Attempt: attempt, Action: action, Outcome: outcome, Service: "test",
	}
	if output != "" {
		r.Output = json.RawMessage(output)
	}
	return r
}

// applyReplies applies replies as one batch and returns each verdict.
func applyReplies(t testing.TB, e *Engine, replies ...protocol.Reply) []error {
	t.Helper()
	jobs := make([]*replyJob, len(replies))
	for i := range replies {
		jobs[i] = &replyJob{reply: replies[i], subject: protocol.ReplySubject(replies[i].Definition)}
	}
	return e.applyReplies(context.Background(), jobs)
}

// kinds summarises a history as "kind step attempt action outcome" lines (empty parts dropped).
func kinds(h []HistoryEntry) []string {
	out := make([]string, len(h))
	for i, e := range h {
		parts := []string{string(e.Kind)}
		if e.Step != "" {
			parts = append(parts, e.Step, itoa(e.Attempt), e.Action)
		}
		if e.Outcome != "" {
			parts = append(parts, e.Outcome)
		}
		out[i] = strings.Join(parts, " ")
	}
	return out
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func history(t testing.TB, e *Engine, id string) []HistoryEntry {
	t.Helper()
	h, err := e.History(t.Context(), id)
	require.NoError(t, err)
	for i, entry := range h {
		require.Equal(t, int64(i+1), entry.Seq, "history of %s has a gap or a duplicate", id)
	}
	return h
}

func get(t testing.TB, e *Engine, id string) *Instance {
	t.Helper()
	inst, err := e.Get(t.Context(), id)
	require.NoError(t, err)
	return inst
}
