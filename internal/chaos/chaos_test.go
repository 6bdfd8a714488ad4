package chaos_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"go.uber.org/goleak"

	order "github.com/sagaflow/sagaflow/examples/order"
)

// TestMain fails the package's tests if a goroutine outlives them (the process reapers, the load,
// the recorder's connection).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// database/sql's opener of a pool closed by the test can outlive Close for a moment.
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
	)
}

// The run's size: orders placed under faults, one every loadInterval, then afterOrders once every
// fault is over (they show the system healed by itself).
const (
	chaosOrders  = 400
	loadInterval = 80 * time.Millisecond
	afterOrders  = 40
)

// fault is one entry of the fault schedule.
type fault struct {
	name string
	do   func(ctx context.Context, t *testing.T)
}

// TestChaos runs the order system as separate processes — two orchestrator replicas (sagaflow
// serve), the four services (order-service), nats-server and PostgreSQL, each on 127.0.0.1 — and
// places orders through the HTTP API while a fault schedule kills and breaks them (see faults).
// The test restarts only what it killed. Then every saga must have finished, completed or
// compensated, SQL written here must find the business consistent across the five databases, every
// outbox drained, and no process may have exited by itself.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("the chaos test runs the whole system for minutes; skipped with -short")
	}
	ctx := t.Context()
	seed := rand.Int64N(1 << 40)
	t.Logf("seed %d", seed)
	began := time.Now()
	bins := buildBinaries(ctx, t)
	built := time.Now()
	s := startSystem(ctx, t, bins, seed)
	rec, err := newRecorder(s.natsURL, seed)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rec.close)

	// The load runs in the background; the faults run here, each when the load has placed its
	// share of the orders, so they hit sagas at every stage.
	l := newLoad(s.apiURLs, s.http, seed)
	loadErr := make(chan error, 1)
	go func() { loadErr <- l.run(ctx, chaosOrders, loadInterval) }()
	schedule := faults(s, rec)
	names := make([]string, 0, len(schedule))
	for i, f := range schedule {
		waitFor(ctx, t, 3*time.Minute, "the load to reach fault "+f.name, func(context.Context) error {
			if l.started.Load() < int64((i+1)*chaosOrders/(len(schedule)+2)) {
				return errNotYet
			}
			return nil
		})
		t.Logf("%6.1fs fault: %s (%d orders started)", time.Since(built).Seconds(), f.name, l.started.Load())
		f.do(ctx, t)
		names = append(names, f.name)
	}
	if err := <-loadErr; err != nil {
		t.Fatalf("load: %v", err)
	}
	// Every process was restarted only by the test, after killing it: the system heals by itself.
	waitFor(ctx, t, 2*time.Minute, "both orchestrators ready after the faults", s.allReady)
	if err := l.run(ctx, afterOrders, loadInterval); err != nil {
		t.Fatalf("load after the faults: %v", err)
	}
	loaded := time.Now()

	d := openDBs(ctx, t, s.pg)
	orders, sagaIDs := l.snapshot()
	waitFor(ctx, t, 4*time.Minute, "every saga finished", func(ctx context.Context) error {
		var n, total int
		if err := d.orch.GetContext(ctx, &n, unfinished, order.Definition); err != nil {
			return err
		}
		if err := d.orch.GetContext(ctx, &total, countSagas, order.Definition); err != nil {
			return err
		}
		if n > 0 || total < len(orders) {
			return fmt.Errorf("%d of %d sagas unfinished, %d orders placed", n, total, len(orders))
		}
		return nil
	})
	finished := time.Now()
	for name, db := range d.all() {
		waitFor(ctx, t, time.Minute, "the outbox of "+name+" drained", func(ctx context.Context) error {
			var n int
			if err := db.GetContext(ctx, &n, unpublished); err != nil {
				return err
			}
			if n > 0 {
				return fmt.Errorf("%d rows unpublished", n)
			}
			return nil
		})
	}

	c, violations, err := checkInvariants(ctx, d, orders, sagaIDs)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range violations {
		if i == 50 {
			t.Errorf("… and %d more violations", len(violations)-i)
			break
		}
		t.Errorf("violation: %s", v)
	}
	if c.completed == 0 || c.compensated == 0 {
		t.Errorf("want both outcomes: %d completed, %d compensated", c.completed, c.compensated)
	}
	var exits []string
	for _, p := range append(s.all(), s.nats) {
		exits = append(exits, p.unexpectedExits()...)
		if !p.running() {
			exits = append(exits, p.name+" is not running at the end")
		}
	}
	if len(exits) > 0 {
		t.Errorf("processes needed a restart:\n%s", strings.Join(exits, "\n"))
	}
	// Every message was valid: none may have been dead-lettered (a redelivery backoff spent while
	// PostgreSQL recovered from its crash once did that).
	dead := rec.deadLettered()
	for _, d := range dead {
		t.Errorf("dead letter: %s", d)
	}
	// What the duplicates and redeliveries came to at the orchestrator: replies recorded and ignored.
	var ignored int
	if err := d.orch.GetContext(ctx, &ignored, `SELECT count(*) FROM sagaflow_history WHERE kind = 'ignored'`); err != nil {
		t.Fatal(err)
	}
	t.Logf("chaos summary: %d sagas (%d completed, %d compensated), %d orders placed, %d starts repeated after errors, "+
		"%d replies ignored (duplicate or stale), %d dead letters; %d faults: %s; build %s, load %s, drain %s, total %s",
		c.sagas, c.completed, c.compensated, len(orders), l.retries.Load(), ignored, len(dead), len(names), strings.Join(names, "; "),
		built.Sub(began).Round(time.Second), loaded.Sub(built).Round(time.Second), finished.Sub(loaded).Round(time.Second),
		time.Since(began).Round(time.Second))
}

// faults is the schedule: every kind of process killed with SIGKILL and restarted, nats-server
// killed and restarted on its store, PostgreSQL crashed and restarted, the JetStream store wiped,
// and commands and replies republished as duplicates — one at a time, each over (what was killed
// restarted and ready) before the next.
func faults(s *system, rec *recorder) []fault {
	kill := func(p *proc, ready func(context.Context) error) func(context.Context, *testing.T) {
		return func(ctx context.Context, t *testing.T) {
			p.kill()
			pause(ctx, 500*time.Millisecond)
			s.startProc(ctx, t, p, ready)
		}
	}
	killService := func(name string) fault {
		p := s.services[name]
		return fault{"SIGKILL " + p.name, kill(p, serviceReady(p))}
	}
	duplicates := fault{"republish 150 commands and replies as duplicates", func(ctx context.Context, t *testing.T) {
		if _, err := rec.republish(ctx, 150); err != nil {
			t.Fatal(err)
		}
	}}
	return []fault{
		{"SIGKILL orchestrator-a", kill(s.orchs[0], s.orchestratorReady(0))},
		killService(order.ServiceOrder),
		duplicates,
		{"SIGKILL nats-server, restart on its store", func(ctx context.Context, t *testing.T) {
			s.nats.kill()
			pause(ctx, time.Second)
			s.startNATS(ctx, t)
			waitFor(ctx, t, 2*time.Minute, "both orchestrators ready", s.allReady)
		}},
		killService(order.ServiceInventory),
		{"PostgreSQL crash (pg_ctl stop -m immediate), restart", func(ctx context.Context, t *testing.T) {
			if err := s.pg.crash(ctx); err != nil {
				t.Fatal(err)
			}
			pause(ctx, 2*time.Second)
			if err := s.pg.start(ctx); err != nil {
				t.Fatal(err)
			}
			waitFor(ctx, t, 2*time.Minute, "both orchestrators ready", s.allReady)
		}},
		killService(order.ServicePayment),
		duplicates,
		{"wipe the JetStream store (SIGKILL nats-server, delete its store, start it empty)", func(ctx context.Context, t *testing.T) {
			s.nats.kill()
			if err := os.RemoveAll(s.natsStore); err != nil {
				t.Fatal(err)
			}
			s.startNATS(ctx, t)
			waitFor(ctx, t, 2*time.Minute, "both orchestrators ready (streams recreated)", s.allReady)
		}},
		killService(order.ServiceShipping),
		{"SIGKILL orchestrator-b", kill(s.orchs[1], s.orchestratorReady(1))},
		duplicates,
		{"SIGKILL both orchestrators at once", func(ctx context.Context, t *testing.T) {
			for _, p := range s.orchs {
				p.kill()
			}
			pause(ctx, 500*time.Millisecond)
			for i, p := range s.orchs {
				s.startProc(ctx, t, p, s.orchestratorReady(i))
			}
		}},
		{"SIGKILL all four services at once", func(ctx context.Context, t *testing.T) {
			for _, name := range order.Services {
				s.services[name].kill()
			}
			pause(ctx, 500*time.Millisecond)
			for _, name := range order.Services {
				s.startProc(ctx, t, s.services[name], serviceReady(s.services[name]))
			}
		}},
	}
}

// pause waits d (the fault schedule's pacing: a process stays down a moment) or until ctx ends.
func pause(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// openDBs opens the five databases for the checks, closed in t.Cleanup.
func openDBs(ctx context.Context, t *testing.T, pg *postgres) dbs {
	t.Helper()
	open := func(name string) *sqlx.DB {
		db, err := pg.open(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		return db
	}
	return dbs{orch: open(orchestratorDB), orders: open(serviceDB(order.ServiceOrder)), inventory: open(serviceDB(order.ServiceInventory)),
		payment: open(serviceDB(order.ServicePayment)), shipping: open(serviceDB(order.ServiceShipping))}
}
