package chaos_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	order "github.com/sagaflow/sagaflow/examples/order"
)

// Databases of the system: the orchestrators' and one per service.
const orchestratorDB = "orchestrator"

// serviceDB is the database of service.
func serviceDB(service string) string { return "svc_" + service }

// binaries are the built programs the system runs.
type binaries struct {
	sagaflow, orderService, natsServer string
}

// buildBinaries builds sagaflow, order-service and nats-server into a test directory (go build,
// once per test; Go's build cache makes a rebuild quick).
func buildBinaries(ctx context.Context, t *testing.T) binaries {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the chaos test builds its binaries with the go command: %v", err)
	}
	dir := t.TempDir()
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", dir+string(os.PathSeparator),
		"github.com/sagaflow/sagaflow/cmd/sagaflow",
		"github.com/sagaflow/sagaflow/examples/order/cmd/order-service",
		"github.com/nats-io/nats-server/v2")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return binaries{sagaflow: filepath.Join(dir, "sagaflow"), orderService: filepath.Join(dir, "order-service"),
		natsServer: filepath.Join(dir, "nats-server")}
}

// system is the order system as separate processes, and the infrastructure under it.
type system struct {
	dir       string
	pg        *postgres
	nats      *proc
	natsURL   string
	natsStore string
	orchs     []*proc
	apiURLs   []string
	services  map[string]*proc
	http      *http.Client
}

// all returns every process of the system but nats-server.
func (s *system) all() []*proc {
	ps := append([]*proc(nil), s.orchs...)
	for _, name := range order.Services {
		ps = append(ps, s.services[name])
	}
	return ps
}

// startSystem starts PostgreSQL, nats-server, two orchestrators and the four services, and waits
// until each is ready. Everything is stopped in t.Cleanup; when the test failed, the tails of the
// processes' logs are printed first.
func startSystem(ctx context.Context, t *testing.T, bins binaries, seed int64) *system {
	t.Helper()
	dir := t.TempDir()
	s := &system{dir: dir, services: map[string]*proc{}, http: &http.Client{Timeout: 10 * time.Second}}
	t.Cleanup(s.http.CloseIdleConnections)
	s.pg = startPostgres(ctx, t, dir)
	dbs := []string{orchestratorDB}
	for _, name := range order.Services {
		dbs = append(dbs, serviceDB(name))
	}
	if err := s.pg.createDatabases(ctx, dbs...); err != nil {
		t.Fatal(err)
	}

	natsPort, err := freePort(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.natsURL = fmt.Sprintf("nats://127.0.0.1:%d", natsPort)
	s.natsStore = filepath.Join(dir, "jetstream")
	logs := filepath.Join(dir, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		t.Fatal(err)
	}
	s.nats = newProc("nats-server", bins.natsServer, filepath.Join(logs, "nats-server.log"),
		"-a", "127.0.0.1", "-p", strconv.Itoa(natsPort), "-js", "-sd", s.natsStore, "-n", "chaos")

	defs := filepath.Join(dir, "definitions")
	if err := os.MkdirAll(defs, 0o755); err != nil {
		t.Fatal(err)
	}
	yaml, err := os.ReadFile(filepath.Join("..", "..", "examples", "order", "order-fulfilment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(defs, "order-fulfilment.yaml"), yaml, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"orchestrator-a", "orchestrator-b"} {
		port, err := freePort(ctx)
		if err != nil {
			t.Fatal(err)
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		s.apiURLs = append(s.apiURLs, "http://"+addr)
		s.orchs = append(s.orchs, newProc(name, bins.sagaflow, filepath.Join(logs, name+".log"),
			"serve", "--db", s.pg.dsn(orchestratorDB), "--db-max-conns", "8", "--nats", s.natsURL,
			"--definitions", defs, "--http", addr, "--trace", "none"))
	}
	for _, name := range order.Services {
		args := []string{"--service", name, "--db", s.pg.dsn(serviceDB(name)), "--db-max-conns", "4", "--nats", s.natsURL,
			"--seed", strconv.FormatInt(seed, 10), "--trace", "none"}
		switch name {
		case order.ServicePayment:
			args = append(args, "--payment-decline-rate", "0.2")
		case order.ServiceInventory:
			args = append(args, "--out-of-stock-rate", "0.05")
		}
		s.services[name] = newProc(name+"-service", bins.orderService, filepath.Join(logs, name+"-service.log"), args...)
	}

	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range append(s.all(), s.nats) {
				t.Logf("--- last lines of %s (%s):\n%s", p.name, p.logPath, p.tail(40))
			}
			t.Logf("--- last lines of the PostgreSQL log:\n%s", tailFile(s.pg.logPath, 20))
		}
	})
	t.Cleanup(func() { s.nats.stop(10 * time.Second) })
	s.startNATS(ctx, t)
	for i, p := range s.orchs {
		t.Cleanup(func() { p.stop(15 * time.Second) })
		s.startProc(ctx, t, p, s.orchestratorReady(i))
	}
	for _, name := range order.Services {
		p := s.services[name]
		t.Cleanup(func() { p.stop(15 * time.Second) })
		s.startProc(ctx, t, p, serviceReady(p))
	}
	return s
}

// startProc starts p and waits until ready says it is.
func (s *system) startProc(ctx context.Context, t *testing.T, p *proc, ready func(context.Context) error) {
	t.Helper()
	if err := p.start(); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, 90*time.Second, p.name+" ready", func(ctx context.Context) error {
		if !p.running() {
			return fmt.Errorf("%s is not running: %s", p.name, strings.Join(p.unexpectedExits(), "; "))
		}
		return ready(ctx)
	})
}

// startNATS starts nats-server on its port and store and waits until JetStream answers.
func (s *system) startNATS(ctx context.Context, t *testing.T) {
	t.Helper()
	s.startProc(ctx, t, s.nats, func(ctx context.Context) error {
		nc, err := nats.Connect(s.natsURL, nats.Timeout(time.Second))
		if err != nil {
			return err
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return err
		}
		_, err = js.AccountInfo(ctx)
		return err
	})
}

// orchestratorReady reports whether orchestrator i answers /readyz with 200: its database, NATS
// and Sagaflow's streams are there.
func (s *system) orchestratorReady(i int) func(context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.apiURLs[i]+"/readyz", nil)
		if err != nil {
			return err
		}
		resp, err := s.http.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s/readyz: %s", s.apiURLs[i], resp.Status)
		}
		return nil
	}
}

// serviceReady reports whether the current incarnation of a service's process has logged that it
// runs (its database migrated, NATS connected, its participant started).
func serviceReady(p *proc) func(context.Context) error {
	return func(context.Context) error {
		if !strings.Contains(p.logSinceStart(), "order example service running") {
			return errNotYet
		}
		return nil
	}
}

// allReady reports whether both orchestrators are ready.
func (s *system) allReady(ctx context.Context) error {
	for i := range s.orchs {
		if err := s.orchestratorReady(i)(ctx); err != nil {
			return err
		}
	}
	return nil
}
