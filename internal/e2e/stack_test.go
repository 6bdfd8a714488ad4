package e2e_test

import (
	"context"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/engine"
	order "github.com/sagaflow/sagaflow/examples/order"
	"github.com/sagaflow/sagaflow/examples/order/driver"
	"github.com/sagaflow/sagaflow/examples/order/services"
	"github.com/sagaflow/sagaflow/internal/natstest"
	"github.com/sagaflow/sagaflow/internal/pgtest"
	"github.com/sagaflow/sagaflow/internal/server"
	"github.com/sagaflow/sagaflow/internal/sqldb"
	"github.com/sagaflow/sagaflow/participant"
	"github.com/sagaflow/sagaflow/saga"
)

// orchestratorService is the service name of the orchestrator node (stackConfig.TracerProviderFunc).
const orchestratorService = "sagaflow"

// env is the infrastructure of one test: a JetStream server and five PostgreSQL schemas, one for
// the orchestrator and one per service.
type env struct {
	nats     *natstest.Server
	orch     serviceDB
	services map[string]serviceDB
}

// serviceDB is one database of the system under test: its handle and its DSN (for LISTEN/NOTIFY,
// and for a child process).
type serviceDB struct {
	DB        *sqlx.DB
	ListenDSN string
}

// stackConfig is what a test varies in the order system it runs in process.
type stackConfig struct {
	// RunOrchestrator runs the orchestrator node's engine and relay here; false when it runs in a
	// child process and the stack only starts sagas and runs services.
	RunOrchestrator bool
	// HTTPAddr is the API's address; empty: no API.
	HTTPAddr string
	// Definition is the saga definition; nil: fastDefinition.
	Definition *saga.Definition
	// Services holds the database of each service to run here; nil: all of env's (see run's only).
	Services map[string]serviceDB
	// Options is the services' failure injection.
	Options services.Options
	// WrapPublisherFunc wraps every relay's publisher (a bus that loses or duplicates).
	WrapPublisherFunc func(message.Publisher) message.Publisher
	// TracerProviderFunc returns the tracer provider of a process (orchestratorService or a
	// service name); nil: the global provider.
	TracerProviderFunc func(service string) trace.TracerProvider
	MeterProvider      metric.MeterProvider
	MetricsHandler     http.Handler
}

// testStack is the order system a test runs: the nodes internal/server assembles, the services taken
// from the example's one registry (examples/order/services), as sagaflow dev runs them.
type testStack struct {
	*server.Stack
	def      string
	services map[string]serviceDB
}

// newStack migrates the databases of cfg and builds its nodes on nc, the orchestrator's on orch.
func newStack(t *testing.T, nc *nats.Conn, orch serviceDB, cfg stackConfig) *testStack {
	t.Helper()
	if cfg.Definition == nil {
		cfg.Definition = fastDefinition(t)
	}
	tracer := func(service string) trace.TracerProvider {
		if cfg.TracerProviderFunc == nil {
			return nil
		}
		return cfg.TracerProviderFunc(service)
	}
	reg := definitions.NewRegistry()
	require.NoError(t, reg.Register(cfg.Definition))
	require.NoError(t, engine.Migrate(t.Context(), orch.DB))
	scfg := server.StackConfig{Orchestrator: server.Config{
		DB: orch.DB, ListenDSN: orch.ListenDSN, NATS: nc, Definitions: reg,
		Orchestrator: cfg.RunOrchestrator, Relay: cfg.RunOrchestrator, HTTPAddr: cfg.HTTPAddr,
		WrapPublisherFunc: cfg.WrapPublisherFunc, TracerProvider: tracer(orchestratorService),
		MeterProvider: cfg.MeterProvider, MetricsHandler: cfg.MetricsHandler,
	}}
	for _, name := range order.Services {
		db, ok := cfg.Services[name]
		if !ok {
			continue
		}
		require.NoError(t, services.Migrate(t.Context(), name, db.DB, cfg.Options))
		scfg.Participants = append(scfg.Participants, server.ParticipantConfig{
			Participant: participant.Config{Service: name}, DB: db.DB, ListenDSN: db.ListenDSN, NATS: nc,
			RegisterFunc:      func(p *participant.Participant) error { return services.Register(name, p, cfg.Options) },
			WrapPublisherFunc: cfg.WrapPublisherFunc, TracerProvider: tracer(name), MeterProvider: cfg.MeterProvider,
		})
	}
	s, err := server.NewStack(t.Context(), scfg)
	require.NoError(t, err)
	return &testStack{Stack: s, def: cfg.Definition.Name, services: cfg.Services}
}

// Engine is the orchestrator's Go client (it starts and reads sagas through the database, whether
// or not this stack runs the orchestrator).
func (s *testStack) Engine() *engine.Engine { return s.Node().Engine() }

// Addr is the API's address, or "".
func (s *testStack) Addr() string { return s.Node().Addr() }

// Starter adapts the engine to the driver.
func (s *testStack) Starter() driver.Starter { return driver.EngineStarter(s.Engine(), s.def) }

// DriverDBs returns the four service databases for the driver's invariant checks.
func (s *testStack) DriverDBs() driver.DBs {
	return driver.DBs{
		Orders:    s.services[order.ServiceOrder].DB,
		Inventory: s.services[order.ServiceInventory].DB,
		Payment:   s.services[order.ServicePayment].DB,
		Shipping:  s.services[order.ServiceShipping].DB,
	}
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{nats: natstest.New(t, nil), services: map[string]serviceDB{}}
	e.orch = openSchema(t, 4)
	for _, s := range order.Services {
		e.services[s] = openSchema(t, 3)
	}
	return e
}

// openSchema opens a fresh schema with a pool of at most conns connections: the suite shares one
// PostgreSQL server and stays under its connection budget (README, scripts/busy.sh).
func openSchema(t *testing.T, conns int) serviceDB {
	t.Helper()
	dsn := pgtest.SchemaDSN(t)
	db, err := sqldb.Open(t.Context(), dsn)
	require.NoError(t, err)
	db.SetMaxOpenConns(conns)
	t.Cleanup(func() { _ = db.Close() })
	return serviceDB{DB: db, ListenDSN: dsn}
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

// run starts a stack in the background, stopped (and waited for) in t.Cleanup, on e's NATS and
// orchestrator database; cfg.Services nil means e's services, all of them or those in only.
func (e *env) run(t *testing.T, cfg stackConfig, only ...string) *testStack {
	t.Helper()
	if cfg.Services == nil {
		cfg.Services = map[string]serviceDB{}
		for name, db := range e.services {
			if len(only) == 0 || slices.Contains(only, name) {
				cfg.Services[name] = db
			}
		}
	}
	s, _ := e.startStack(t, cfg)
	return s
}

// startStack runs a stack on e's NATS and orchestrator database until the returned stop is called
// (or the test ends).
func (e *env) startStack(t *testing.T, cfg stackConfig) (*testStack, func()) {
	t.Helper()
	s := newStack(t, e.nats.Connect(t), e.orch, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			require.NoError(t, <-done)
		}
	}
	t.Cleanup(stop)
	return s, stop
}

// drive places n orders through the stack and returns the driver's report.
func drive(t *testing.T, stack *testStack, n, concurrency int) driver.Report {
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
