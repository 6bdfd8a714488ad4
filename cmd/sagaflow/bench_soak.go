package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/sagaflow/sagaflow/engine/httpapi"
	order "github.com/sagaflow/sagaflow/examples/order"
	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/natsembed"
	"github.com/sagaflow/sagaflow/internal/pgschema"
)

// soakConfig is what "sagaflow bench soak" runs, from its flags.
type soakConfig struct {
	postgres, nats, serviceBin, csv string
	rate                            float64
	duration, interval, drain       time.Duration
	retention                       time.Duration
	maxDeliver                      int
	declineRate                     float64
	keep                            bool
	findCapacity                    bool
	capacityDuration                time.Duration
	capacityWorkers                 int
	capacityShare                   float64
}

func newBenchSoakCmd() *cobra.Command {
	var cfg soakConfig
	c := &cobra.Command{
		Use:   "soak",
		Short: "Run the order system as separate processes at a fixed rate and follow memory, files, connections, tables, streams and latency",
		Long: `Soak starts the order system as separate processes — "sagaflow serve" (this binary) and the order
example's four services (--service-bin) — each on a PostgreSQL database of its own that it creates
on --postgres (named sagaflow_soak_<id>_<component>, dropped at the end unless --keep), and on a NATS
server (--nats, else one in this process with file storage in a temporary directory), with every
stream, subject and consumer in a namespace of its own (soak-<id>), so it runs beside other users.

It then starts order sagas through serve's HTTP API at a fixed open-loop rate: start i is due at
i/--rate seconds, whatever happened to the ones before; a start issued more than 100ms after its
time is counted as late, never skipped. Every --interval it prints, per interval: sagas started,
finished, in flight, late, failed starts, p50/p99 latency (from the saga's creation to its finish,
both the engine's clock) of the sagas finished in it; per process: RSS, open files and CPU (the
"soak" process is this one: the load driver, and the NATS server unless --nats is given); per
database: connections (pg_stat_activity, the soak's own left out) and size; the rows of every
table; and the messages and bytes of every stream.

Serve keeps finished sagas, their history and its inbox for --retention (short, so that the
tables settle within the run), and --max-deliver sets how often a reply is delivered (the inbox
retention must be at least --max-deliver × 30s + 2m). At the end, after the sagas in flight
finished (or --drain passed), it prints a verdict per series: flat, or growing when the mean of the
last third of the samples exceeds the middle third's by more than 10% plus a margin of its unit;
growth that must happen in a run this short (business tables, the participant barrier, whose
retention is at least 1h) is marked expected. It exits 1 if a process died, a start failed, or a
saga did not finish.

--find-capacity first runs --capacity-workers closed-loop workers for --capacity-duration and sets
--rate to --capacity-share of the sagas they finished per second. docs/benchmarks.md ("Soak") has
the figures of this repository.`,
		Example: `  sagaflow bench soak --rate 40 --duration 10m --interval 30s --csv soak.csv
  sagaflow bench soak --find-capacity --duration 10m --postgres 'postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cfg.check(); err != nil {
				return usageError{err}
			}
			var err error
			if cfg.postgres, err = pgschema.Find(cmd.Context(), cfg.postgres); err != nil {
				return err
			}
			return runSoak(cmd.Context(), cfg, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := c.Flags()
	f.StringVar(&cfg.postgres, "postgres", "", "PostgreSQL DSN of a server where the soak may create databases (default: $SAGAFLOW_TEST_POSTGRES or 127.0.0.1:5432)")
	f.StringVar(&cfg.nats, "nats", "", "NATS URL (default: a server in this process, file storage in a temporary directory)")
	f.StringVar(&cfg.serviceBin, "service-bin", "", "the order example's service binary (default: build examples/order/cmd/order-service with go build, inside the repository)")
	f.Float64Var(&cfg.rate, "rate", 20, "sagas started per second (open loop)")
	f.DurationVar(&cfg.duration, "duration", 10*time.Minute, "how long sagas are started")
	f.DurationVar(&cfg.interval, "interval", 30*time.Second, "time between two samples")
	f.DurationVar(&cfg.drain, "drain", 2*time.Minute, "how long to wait at the end for the sagas in flight")
	f.DurationVar(&cfg.retention, "retention", 3*time.Minute, "serve's --retention and --inbox-retention: how long finished sagas and applied reply ids are kept")
	f.IntVar(&cfg.maxDeliver, "max-deliver", 2, "serve's --max-deliver (the inbox retention must be at least this × 30s + 2m)")
	f.Float64Var(&cfg.declineRate, "payment-decline-rate", 0.1, "share of orders the payment service declines (those sagas compensate)")
	f.BoolVar(&cfg.keep, "keep", false, "keep the databases and the processes' logs")
	f.StringVar(&cfg.csv, "csv", "", "write every sample to this file (rows elapsed_s,series,value)")
	f.BoolVar(&cfg.findCapacity, "find-capacity", false, "measure the capacity first (closed loop) and run at --capacity-share of it instead of --rate")
	f.DurationVar(&cfg.capacityDuration, "capacity-duration", time.Minute, "length of the closed-loop capacity run")
	f.IntVar(&cfg.capacityWorkers, "capacity-workers", 64, "concurrent sagas of the closed-loop capacity run")
	f.Float64Var(&cfg.capacityShare, "capacity-share", 0.6, "share of the measured capacity the soak runs at (with --find-capacity)")
	return c
}

func (c soakConfig) check() error {
	var errs []error
	if c.rate <= 0 && !c.findCapacity {
		errs = append(errs, fmt.Errorf("--rate %v: must be positive", c.rate))
	}
	if c.duration <= 0 || c.interval <= 0 || c.drain < 0 {
		errs = append(errs, errors.New("--duration and --interval must be positive, --drain not negative"))
	}
	if c.interval > c.duration {
		errs = append(errs, fmt.Errorf("--interval %s is longer than --duration %s", c.interval, c.duration))
	}
	if c.maxDeliver < 1 {
		errs = append(errs, fmt.Errorf("--max-deliver %d: must be at least 1", c.maxDeliver))
	}
	if c.declineRate < 0 || c.declineRate > 1 {
		errs = append(errs, fmt.Errorf("--payment-decline-rate %v: want 0..1", c.declineRate))
	}
	if c.findCapacity && (c.capacityDuration <= 0 || c.capacityWorkers < 1 || c.capacityShare <= 0 || c.capacityShare > 1) {
		errs = append(errs, errors.New("--capacity-duration and --capacity-workers must be positive, --capacity-share in (0, 1]"))
	}
	return errors.Join(errs...)
}

// soakRun is the order system a soak started, and what it needs to stop it.
type soakRun struct {
	cfg       soakConfig
	id        string
	namespace bus.Namespace
	dir       string
	api       string // serve's HTTP API, http://127.0.0.1:PORT
	admin     *sqlx.DB
	databases map[string]string   // component → database
	dbs       map[string]*sqlx.DB // component → the soak's one-connection pool on it
	js        jetstream.JetStream
	procs     []*soakProc
	deaths    chan *soakProc
	progress  io.Writer
	// autovacuumOff is set when the server runs without autovacuum: dead rows are then never
	// reclaimed, and database sizes grow whatever the retention.
	autovacuumOff bool
	cleanups      []func() error // run in reverse order by close
}

func (r *soakRun) onClose(f func() error) { r.cleanups = append(r.cleanups, f) }

// close stops what the run started, in reverse order, and returns the first error.
func (r *soakRun) close() error {
	var errs []error
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		if err := r.cleanups[i](); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// soakComponents are the order system's processes, each with a database of its own.
var soakComponents = append([]string{"orchestrator"}, order.Services...)

// runSoak sets the order system up, runs the soak and reports it.
func runSoak(ctx context.Context, cfg soakConfig, stdout, progress io.Writer) (err error) {
	r := &soakRun{cfg: cfg, id: randomHex(4), databases: map[string]string{}, dbs: map[string]*sqlx.DB{},
		deaths: make(chan *soakProc, len(soakComponents)), progress: progress}
	r.namespace = bus.Namespace("soak-" + r.id)
	defer func() {
		if cerr := r.close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	if err := r.setUp(ctx); err != nil {
		return err
	}
	return r.run(ctx, stdout)
}

// setUp creates the databases, starts NATS (unless given), serve and the four services, and waits
// until serve is ready.
func (r *soakRun) setUp(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "sagaflow-soak-")
	if err != nil {
		return err
	}
	r.dir = dir
	r.onClose(func() error {
		if r.cfg.keep {
			fmt.Fprintf(r.progress, "soak: kept the processes' logs in %s\n", dir)
			return nil
		}
		return os.RemoveAll(dir)
	})
	serviceBin := r.cfg.serviceBin
	if serviceBin == "" {
		fmt.Fprintln(r.progress, "soak: building the order example's service (go build)")
		if serviceBin, err = buildServiceBin(ctx, dir); err != nil {
			return err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find this binary to run sagaflow serve: %w", err)
	}
	if err := r.createDatabases(ctx); err != nil {
		return err
	}
	natsURL := r.cfg.nats
	if natsURL == "" {
		ns, err := natsembed.Start(natsembed.Config{Dir: filepath.Join(dir, "nats")})
		if err != nil {
			return err
		}
		r.onClose(func() error { ns.Shutdown(); return nil })
		natsURL = ns.ClientURL()
	}
	nc, err := connectNATS(natsURL, "sagaflow-soak", natsAuthFlags{}, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	r.onClose(func() error { nc.Close(); return nil })
	if r.js, err = jetstream.New(nc); err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}

	defs := filepath.Join(dir, "definitions")
	if err := os.Mkdir(defs, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(defs, "order-fulfilment.yaml"), order.DefinitionYAML(), 0o600); err != nil {
		return err
	}
	httpAddr, err := freeAddr(ctx)
	if err != nil {
		return err
	}
	r.onClose(r.stopProcs) // registered before the first start: a half-started system is stopped
	retention := r.cfg.retention.String()
	serve, err := startProc(ctx, "serve", dir, self, []string{"serve", "--db", r.dsn("orchestrator"), "--nats", natsURL,
		"--namespace", string(r.namespace), "--definitions", defs, "--http", httpAddr, "--trace", "none",
		"--log-format", "text", "--log-level", "warn", "--retention", retention, "--inbox-retention", retention,
		"--max-deliver", strconv.Itoa(r.cfg.maxDeliver)}, r.deaths)
	if err != nil {
		return err
	}
	r.procs = append(r.procs, serve)
	r.api = "http://" + httpAddr
	if err := waitReady(ctx, serve, r.api+"/readyz", 2*time.Minute); err != nil {
		return err
	}
	for _, svc := range order.Services {
		args := []string{"--service", svc, "--db", r.dsn(svc), "--nats", natsURL, "--namespace", string(r.namespace),
			"--log-level", "warn", "--trace", "none", "--initial-stock", "1000000000", "--seed", "1"}
		if svc == "payment" {
			args = append(args, "--payment-decline-rate", strconv.FormatFloat(r.cfg.declineRate, 'f', -1, 64))
		}
		p, err := startProc(ctx, svc, dir, serviceBin, args, r.deaths)
		if err != nil {
			return err
		}
		r.procs = append(r.procs, p)
	}
	fmt.Fprintf(r.progress, "soak: namespace %s, databases sagaflow_soak_%s_*, serve on http://%s, logs in %s\n",
		r.namespace, r.id, httpAddr, dir)
	return nil
}

// dsn is the DSN of component's database, with the process's application_name.
func (r *soakRun) dsn(component string) string {
	return dsnFor(r.cfg.postgres, r.databases[component], "", "sagaflow-"+component)
}

// createDatabases creates a database per component, and the soak's own one-connection pools on
// them; they are dropped at the end unless --keep.
func (r *soakRun) createDatabases(ctx context.Context) error {
	admin, err := sqlx.Open("postgres", dsnFor(r.cfg.postgres, "", "", soakAppPrefix+"meter"))
	if err != nil {
		return fmt.Errorf("open a connection to %s: %w", r.cfg.postgres, err)
	}
	admin.SetMaxOpenConns(1)
	r.admin = admin
	r.onClose(admin.Close)
	var autovacuum string
	if err := admin.GetContext(ctx, &autovacuum, `SHOW autovacuum`); err != nil {
		return fmt.Errorf("read the server's autovacuum setting: %w", err)
	}
	r.autovacuumOff = autovacuum != "on"
	for _, c := range soakComponents {
		name := "sagaflow_soak_" + r.id + "_" + c
		if _, err := admin.ExecContext(ctx, `CREATE DATABASE `+name+` TEMPLATE template0`); err != nil {
			return fmt.Errorf("create database %s (the soak needs the right to create databases): %w", name, err)
		}
		r.databases[c] = name
		r.onClose(func() error {
			if r.cfg.keep {
				fmt.Fprintf(r.progress, "soak: kept database %s\n", name)
				return nil
			}
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if _, err := admin.ExecContext(dctx, `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`); err != nil {
				return fmt.Errorf("drop database %s: %w", name, err)
			}
			return nil
		})
		db, err := sqlx.Open("postgres", dsnFor(r.cfg.postgres, name, "", soakAppPrefix+"meter"))
		if err != nil {
			return fmt.Errorf("open database %s: %w", name, err)
		}
		db.SetMaxOpenConns(1)
		r.dbs[c] = db
		r.onClose(db.Close)
	}
	return nil
}

// stopProcs stops the services, then serve; a process that does not exit cleanly is an error.
func (r *soakRun) stopProcs() error {
	var errs []error
	for i := len(r.procs) - 1; i >= 0; i-- {
		if err := r.procs[i].stop(45 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	r.procs = nil
	return errors.Join(errs...)
}

// run drives the load, samples every interval, and reports.
func (r *soakRun) run(ctx context.Context, stdout io.Writer) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case p := <-r.deaths:
			cancel(fmt.Errorf("%w: %s (pid %d) exited (%s); its log %s ends:\n%s", errProcessDied, p.name, p.pid(), p.exitStatus(), p.logPath, p.logTail()))
		case <-ctx.Done():
		}
	}()
	tracker := newSoakTracker(r.dbs["orchestrator"])
	pollCtx, stopPoll := context.WithCancel(ctx)
	defer stopPoll()
	go tracker.poll(pollCtx, 250*time.Millisecond)
	starter := &soakStarter{
		api:     httpapi.NewClient(r.api, "sagaflow-soak", &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128}, Timeout: time.Minute}),
		gen:     order.NewGenerator(1, "soak-"+r.id+"-"),
		tracker: tracker,
	}

	// One saga through the whole system first: every process is up and consuming.
	fmt.Fprintln(r.progress, "soak: waiting for a first saga to finish")
	if err := starter.one(ctx, 2*time.Minute); err != nil {
		return r.failure(ctx, err)
	}
	rate := r.cfg.rate
	if r.cfg.findCapacity {
		fmt.Fprintf(r.progress, "soak: measuring capacity: %d closed-loop workers for %s\n", r.cfg.capacityWorkers, r.cfg.capacityDuration)
		n := starter.closedLoop(ctx, r.cfg.capacityWorkers, r.cfg.capacityDuration)
		capacity := float64(n) / r.cfg.capacityDuration.Seconds()
		if left := tracker.drain(ctx, r.cfg.drain); left > 0 || ctx.Err() != nil {
			return r.failure(ctx, fmt.Errorf("%d sagas of the capacity run did not finish within --drain %s", left, r.cfg.drain))
		}
		rate = capacity * r.cfg.capacityShare
		fmt.Fprintf(stdout, "capacity: %.1f sagas/s (%d finished in %s, %d workers); soak rate %.1f sagas/s (%.0f%%)\n",
			capacity, n, r.cfg.capacityDuration, r.cfg.capacityWorkers, rate, 100*r.cfg.capacityShare)
		if rate <= 0 {
			return r.failure(ctx, errors.New("no saga finished in the capacity run"))
		}
	}
	tracker.take() // the intervals count the soak's sagas only
	tracker.mu.Lock()
	before := tracker.totalStarted
	tracker.mu.Unlock()

	var out *soakCSV
	if r.cfg.csv != "" {
		var err error
		if out, err = createSoakCSV(r.cfg.csv); err != nil {
			return err
		}
		defer out.close()
	}
	sampler := &soakSampler{admin: r.admin, components: soakComponents, databases: r.databases, dbs: r.dbs,
		procs: map[string]int{"soak": os.Getpid()}, js: r.js, streams: r.namespace.StreamNames(), tracker: tracker}
	for _, p := range r.procs {
		sampler.procs[p.name] = p.pid()
		sampler.procOrder = append(sampler.procOrder, p.name)
	}
	sampler.procOrder = append(sampler.procOrder, "soak")
	sampler.start()

	fmt.Fprintf(stdout, "soak: %.1f sagas/s for %s, a sample every %s (namespace %s)\n", rate, r.cfg.duration, r.cfg.interval, r.namespace)
	series := newSoakSeries()
	begin := time.Now()
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		starter.openLoop(ctx, rate, r.cfg.duration)
	}()
	tick := time.NewTicker(r.cfg.interval)
	defer tick.Stop()
	sampling := true
	for sampling {
		select {
		case <-ctx.Done():
			<-loadDone
			return r.failure(ctx, context.Cause(ctx))
		case <-tick.C:
		}
		pts, err := sampler.sample(ctx)
		if err != nil {
			<-loadDone
			return r.failure(ctx, fmt.Errorf("sample: %w", err))
		}
		elapsed := time.Since(begin)
		printSoakSample(stdout, elapsed, pts)
		series.add(pts)
		if out != nil {
			if err := out.write(elapsed, pts); err != nil {
				return err
			}
		}
		sampling = elapsed+r.cfg.interval/2 < r.cfg.duration
	}
	<-loadDone
	left := tracker.drain(ctx, r.cfg.drain)
	if ctx.Err() != nil {
		return r.failure(ctx, context.Cause(ctx))
	}
	return r.report(stdout, tracker, series, before, left)
}

// failure returns err, after the cause of a death if a process died.
func (r *soakRun) failure(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil && errors.Is(cause, errProcessDied) {
		return cause
	}
	return err
}

// report prints the totals and the verdicts, and fails the run if a start failed or a saga did
// not finish. before is the number of sagas started before the soak (the first one and the
// capacity run).
func (r *soakRun) report(w io.Writer, t *soakTracker, series *soakSeries, before, left int) error {
	t.mu.Lock()
	fmt.Fprintf(w, "soak: %d sagas started at the rate (%d late) after %d before it, %d failed starts; finished: %d completed, %d compensated, %d failed; %d not finished after --drain %s\n",
		t.totalStarted-before, t.totalLate, before, t.totalErrors, t.byStatus["completed"], t.byStatus["compensated"], t.byStatus["failed"], left, r.cfg.drain)
	lastErr := t.lastErr
	totalErrors := t.totalErrors
	t.mu.Unlock()
	if r.autovacuumOff {
		fmt.Fprintln(w, "soak: warning: autovacuum is off on this PostgreSQL server, so the space of deleted and updated rows is never reclaimed and the databases' sizes grow whatever the retention")
	}
	leaks := printSoakVerdicts(w, soakVerdicts(series))
	fmt.Fprintf(w, "soak: %d series growing unexpectedly\n", leaks)
	if err := r.stopProcs(); err != nil {
		return err
	}
	switch {
	case totalErrors > 0:
		return fmt.Errorf("%d starts failed (last: %w)", totalErrors, lastErr)
	case left > 0:
		return fmt.Errorf("%d sagas did not finish within --drain %s", left, r.cfg.drain)
	}
	return nil
}
