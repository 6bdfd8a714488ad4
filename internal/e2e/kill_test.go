package e2e_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/examples/order/driver"
	"github.com/sagaflow/sagaflow/examples/order/services"
	"github.com/sagaflow/sagaflow/internal/server"
	"github.com/sagaflow/sagaflow/internal/sqldb"
)

// Environment of the orchestrator child process (the test binary run again).
const (
	envChild = "SAGAFLOW_E2E_ORCHESTRATOR"
	envDSN   = "SAGAFLOW_E2E_DSN"
	envNATS  = "SAGAFLOW_E2E_NATS"
	// envOTLP makes the child export its spans over OTLP (as the OTEL_* variables say).
	envOTLP = "SAGAFLOW_E2E_OTLP"
)

func TestMain(m *testing.M) {
	if os.Getenv(envChild) != "" {
		if err := runOrchestratorChild(); err != nil {
			fmt.Fprintln(os.Stderr, "orchestrator child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runOrchestratorChild is the orchestrator process the kill tests SIGKILL: the same node
// "sagaflow serve" runs (engine, relay), on the test's schema and JetStream server.
func runOrchestratorChild() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	db, err := sqldb.Open(ctx, os.Getenv(envDSN))
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(4) // the suite's connection budget (see openSchema)
	nc, err := nats.Connect(os.Getenv(envNATS), nats.MaxReconnects(-1))
	if err != nil {
		return err
	}
	defer nc.Close()
	reg := definitions.NewRegistry()
	def, err := fastDef()
	if err != nil {
		return err
	}
	if err := reg.Register(def); err != nil {
		return err
	}
	tp, flush, err := startOTLPChildProvider(ctx)
	if err != nil {
		return err
	}
	defer flush()
	node, err := server.New(ctx, server.Config{DB: db, ListenDSN: os.Getenv(envDSN), NATS: nc, Definitions: reg,
		Orchestrator: true, Relay: true, TracerProvider: tp})
	if err != nil {
		return err
	}
	return node.Run(ctx)
}

// child is an orchestrator process.
type child struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startChild(t *testing.T, e *env) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"=1", envDSN+"="+e.orch.ListenDSN, envNATS+"="+e.nats.URL())
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	require.NoError(t, cmd.Start())
	c := &child{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(c.done) }()
	t.Cleanup(func() { c.kill() })
	return c
}

// kill sends SIGKILL (to this child's PID only) and waits for it to be gone.
func (c *child) kill() {
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
}

// TestOrchestratorKilledRepeatedly runs 500 sagas while the orchestrator process is killed with
// SIGKILL at random moments and restarted each time: all finish and the invariants hold.
func TestOrchestratorKilledRepeatedly(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// This process runs the services and starts sagas; the orchestrator runs in the child.
	stack := e.run(t, stackConfig{Options: services.Options{PaymentDeclineRate: 0.25}})

	var mu sync.Mutex
	cur := startChild(t, e)
	stopKiller := make(chan struct{})
	killerDone := make(chan int)
	go func() {
		kills := 0
		for {
			select {
			case <-stopKiller:
				killerDone <- kills
				return
			case <-time.After(time.Duration(500+rand.IntN(1500)) * time.Millisecond):
			}
			mu.Lock()
			cur.kill()
			kills++
			cur = startChild(t, e)
			mu.Unlock()
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	r, err := driver.Run(ctx, driver.Config{Orders: 500, Concurrency: 32, Starter: stack.Starter(), DBs: stack.DriverDBs(), Seed: 7})
	close(stopKiller)
	kills := <-killerDone
	require.NoError(t, err)
	t.Logf("report after %d kills: %+v", kills, r)
	require.Positive(t, kills)
	requireHealthy(t, r, 500)
	requireNoDuplicateTransitions(t, e.orch.DB)
}

// TestTwoReplicasOneKilled runs two orchestrator processes on one database and bus and kills one
// mid-run: the other finishes every saga, and no transition is applied twice.
func TestTwoReplicasOneKilled(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	stack := e.run(t, stackConfig{Options: services.Options{PaymentDeclineRate: 0.25}})
	a := startChild(t, e)
	startChild(t, e)
	go func() {
		time.Sleep(time.Duration(1000+rand.IntN(1000)) * time.Millisecond)
		a.kill()
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	r, err := driver.Run(ctx, driver.Config{Orders: 300, Concurrency: 32, Starter: stack.Starter(), DBs: stack.DriverDBs(), Seed: 11})
	require.NoError(t, err)
	t.Logf("report: %+v", r)
	requireHealthy(t, r, 300)
	requireNoDuplicateTransitions(t, e.orch.DB)
	<-a.done
}
