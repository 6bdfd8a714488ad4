package e2e_test

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/engine"
	order "github.com/sagaflow/sagaflow/examples/order"
	"github.com/sagaflow/sagaflow/examples/order/driver"
	"github.com/sagaflow/sagaflow/internal/natstest"
	"github.com/sagaflow/sagaflow/internal/orderstack"
	"github.com/sagaflow/sagaflow/internal/pgtest"
	"github.com/sagaflow/sagaflow/internal/sqldb"
	"github.com/sagaflow/sagaflow/saga"
)

// env is the infrastructure of one test: a JetStream server and five PostgreSQL schemas, one for
// the orchestrator and one per service.
type env struct {
	nats     *natstest.Server
	orch     orderstack.DB
	services map[string]orderstack.DB
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{nats: natstest.New(t, nil), services: map[string]orderstack.DB{}}
	e.orch = openSchema(t)
	for _, s := range order.Services {
		e.services[s] = openSchema(t)
	}
	return e
}

func openSchema(t *testing.T) orderstack.DB {
	t.Helper()
	dsn := pgtest.SchemaDSN(t)
	db, err := sqldb.Open(t.Context(), dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return orderstack.DB{DB: db, ListenDSN: dsn}
}

// fastDefinition is the example's definition with short timeouts and backoffs, so that timeouts,
// retries and compensations happen within seconds.
func fastDefinition(t *testing.T) *saga.Definition {
	t.Helper()
	def, err := fastDef()
	require.NoError(t, err)
	return def
}

func fastDef() (*saga.Definition, error) {
	def, err := order.LoadDefinition()
	if err != nil {
		return nil, err
	}
	for i := range def.Steps {
		s := &def.Steps[i]
		s.Timeout = 2 * time.Second
		s.Retry = saga.RetryPolicy{MaxAttempts: 3, Backoff: 100 * time.Millisecond, MaxBackoff: 400 * time.Millisecond, Jitter: 0.2}
		s.CompensationRetry = saga.RetryPolicy{MaxAttempts: 50, Backoff: 100 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, Jitter: 0.2}
		if s.Compensation == "" {
			// A step nothing can undo must not run out of attempts on a lossy bus: its outcome
			// would be unknown and compensating the others would leave its effect behind.
			s.Retry.MaxAttempts = 20
		}
	}
	return def, nil
}

// run starts a stack in the background, stopped (and waited for) in t.Cleanup; cfg's NATS and
// databases are filled from e unless set. Services not in only (when given) are not run.
func (e *env) run(t *testing.T, cfg orderstack.Config, only ...string) *orderstack.Stack {
	t.Helper()
	cfg.NATS = e.nats.Connect(t)
	cfg.Orchestrator = e.orch
	if cfg.Services == nil {
		cfg.Services = map[string]orderstack.DB{}
		for name, db := range e.services {
			if len(only) == 0 || contains(only, name) {
				cfg.Services[name] = db
			}
		}
	}
	if cfg.Definition == nil {
		cfg.Definition = fastDefinition(t)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stack, err := orderstack.New(ctx, cfg)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- stack.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return stack
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}

// drive places n orders through the stack and returns the driver's report.
func drive(t *testing.T, stack *orderstack.Stack, n, concurrency int) driver.Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	r, err := driver.Run(ctx, driver.Config{Orders: n, Concurrency: concurrency, Starter: stack.Starter(), DBs: stack.DriverDBs(), Seed: rand.Int64()})
	require.NoError(t, err)
	t.Logf("report: %+v", r)
	return r
}

// requireHealthy asserts that every saga finished and no business invariant broke.
func requireHealthy(t *testing.T, r driver.Report, n int) {
	t.Helper()
	require.Equal(t, n, r.Orders)
	require.Zero(t, r.Stuck, "stuck sagas")
	require.Zero(t, r.Violations, "invariant violations: %v", r.ViolationDetails)
	require.Equal(t, n, r.Completed+r.Compensated+r.Failed)
}

// requireNoDuplicateTransitions asserts that no reply was applied twice: every (saga, step,
// attempt, action) has at most one applied reply in history, and history has no gap.
func requireNoDuplicateTransitions(t *testing.T, db *sqlx.DB) {
	t.Helper()
	var dups []struct {
		SagaID  string `db:"saga_id"`
		Step    string `db:"step"`
		Attempt int    `db:"attempt"`
		Action  string `db:"action"`
		N       int    `db:"n"`
	}
	require.NoError(t, db.SelectContext(t.Context(), &dups, `SELECT saga_id, step, attempt, action, count(*) AS n
		FROM sagaflow_history WHERE kind = 'reply' GROUP BY saga_id, step, attempt, action HAVING count(*) > 1`))
	require.Empty(t, dups, "replies applied twice")
	var gaps int
	require.NoError(t, db.GetContext(t.Context(), &gaps, `SELECT count(*) FROM (
		SELECT saga_id, max(seq) AS m, count(*) AS n FROM sagaflow_history GROUP BY saga_id) h WHERE m <> n`))
	require.Zero(t, gaps, "history sequences with gaps")
}

// compensationOrder returns the steps of the compensation commands sent for a saga, in order
// (first attempt of each).
func compensationOrder(t *testing.T, e *engine.Engine, id string) []string {
	t.Helper()
	hist, err := e.History(t.Context(), id)
	require.NoError(t, err)
	var steps []string
	for _, h := range hist {
		if h.Kind == engine.HistoryCommand && h.Action == "compensate" && h.Attempt == 1 {
			steps = append(steps, h.Step)
		}
	}
	return steps
}

// faultyPublisher wraps the relays' publisher to misbehave like a broker that duplicates or
// loses acknowledged messages. It is a wrapper around the real JetStream publisher, not a fake.
type faultyPublisher struct {
	next      message.Publisher
	dropRate  float64 // share of messages acknowledged but not published
	duplicate bool    // publish every message a second time under a new message id
	mu        sync.Mutex
	rng       *rand.Rand
	dropped   atomic.Int64
	dups      atomic.Int64
}

func newFaulty(dropRate float64, duplicate bool) func(message.Publisher) message.Publisher {
	return func(next message.Publisher) message.Publisher {
		return &faultyPublisher{next: next, dropRate: dropRate, duplicate: duplicate, rng: rand.New(rand.NewPCG(rand.Uint64(), 1))}
	}
}

func (f *faultyPublisher) Publish(topic string, msgs ...*message.Message) error {
	out := make([]*message.Message, 0, 2*len(msgs))
	for _, m := range msgs {
		f.mu.Lock()
		drop := f.rng.Float64() < f.dropRate
		f.mu.Unlock()
		if drop {
			f.dropped.Add(1)
			continue
		}
		out = append(out, m)
		if f.duplicate {
			// A new id defeats JetStream's duplicate window: the consumer sees it twice, as it
			// would after a re-publish past the window.
			c := m.Copy()
			c.UUID = uuid.NewString()
			out = append(out, c)
			f.dups.Add(1)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return f.next.Publish(topic, out...)
}

func (f *faultyPublisher) Close() error { return f.next.Close() }
