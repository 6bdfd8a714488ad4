package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"regexp"
	"runtime/pprof"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	order "github.com/sagaflow/sagaflow/examples/order"
	"github.com/sagaflow/sagaflow/examples/order/driver"
	"github.com/sagaflow/sagaflow/examples/order/services"
	"github.com/sagaflow/sagaflow/internal/benchmeter"
	"github.com/sagaflow/sagaflow/internal/natsembed"
	"github.com/sagaflow/sagaflow/internal/outboxbench"
	"github.com/sagaflow/sagaflow/internal/pgschema"
	"github.com/sagaflow/sagaflow/internal/sqldb"
)

func newBenchCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "bench",
		Short: "Measure Sagaflow on this machine (PostgreSQL + JetStream)",
		Long: `Bench measures throughput and latency against a real PostgreSQL (--postgres, else
$SAGAFLOW_TEST_POSTGRES, else 127.0.0.1:5432; "bash scripts/with-postgres.sh sagaflow bench ..."
starts a private one when none answers) and an in-process NATS JetStream server. Progress goes to
stderr; results are JSON lines on stdout. docs/benchmarks.md has the figures of this repository.`,
	}
	c.AddCommand(newBenchOutboxCmd(), newBenchSagaCmd(), newBenchListCmd(), newBenchSoakCmd())
	return c
}

func newBenchOutboxCmd() *cobra.Command {
	var cfg outboxbench.Config
	c := &cobra.Command{
		Use:     "outbox",
		Short:   "Outbox relay throughput and commit-to-ack latency, against raw publish and Watermill's forwarder",
		Example: `  sagaflow bench outbox --messages 20000 --writers 16`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dsn, err := pgschema.Find(cmd.Context(), cfg.PostgresDSN)
			if err != nil {
				return err
			}
			cfg.PostgresDSN = dsn
			cfg.Progress = cmd.ErrOrStderr()
			res, err := outboxbench.Run(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			return json.NewEncoder(cmd.OutOrStdout()).Encode(res)
		},
	}
	c.Flags().StringVar(&cfg.PostgresDSN, "postgres", "", "PostgreSQL DSN (default: $SAGAFLOW_TEST_POSTGRES or 127.0.0.1:5432)")
	c.Flags().StringVar(&cfg.NATSURL, "nats", "", "NATS URL (default: an in-process server)")
	c.Flags().IntVar(&cfg.Messages, "messages", 20000, "messages per measurement")
	c.Flags().IntVar(&cfg.Writers, "writers", 16, "concurrent writers")
	return c
}

// sagaBenchResult is one JSON line of "sagaflow bench saga": one cell (mode × concurrency).
type sagaBenchResult struct {
	Mode        string `json:"mode"`
	Concurrency int    `json:"concurrency"`
	MaxDBConns  int    `json:"max_db_conns"`
	driver.Report
	benchmeter.Figures
}

// sagaBenchConfig is what "sagaflow bench saga" measures, from its flags.
type sagaBenchConfig struct {
	postgres    string // DSN of the server; the bench creates a database of its own per cell
	modes       []string
	levels      []int
	orders      int
	maxDBConns  int
	appName     string // application_name prefix of every connection
	concurrency string // the flag, parsed into levels
	modesFlag   string // the flag, parsed into modes
	cpuProfile  string // --cpuprofile: a pprof CPU profile of the whole run
}

func newBenchSagaCmd() *cobra.Command {
	var cfg sagaBenchConfig
	c := &cobra.Command{
		Use:   "saga",
		Short: "Order sagas per second, latency, and what each saga costs in CPU, transactions and messages",
		Long: `Saga runs the order example (orchestrator and four services, each on its own schema of a
PostgreSQL database created for the run, one in-process JetStream) and places --orders orders at
each concurrency, in each mode: "success" (every saga completes) and "compensate" (every payment
is declined, so every saga compensates). For each run (cell) it prints one JSON line on stdout:
the driver's report (sagas/s, p50, p99, …), mode and concurrency, and what a saga cost:
  go_cpu_ms_per_saga     CPU of this process (orchestrator, services, driver, NATS server)
  pg_cpu_ms_per_saga     CPU of the PostgreSQL backends serving the bench's database (null, with
                         pg_cpu_note, when they cannot be read: PostgreSQL on another machine, …)
  cpu_ms_per_saga        the two together
  pg_xact_per_saga       transactions committed in the bench's database
  js_publishes_per_saga  messages JetStream stored
It uses at most --max-db-conns connections to PostgreSQL in all (each named by
--application-name in pg_stat_activity), and needs the right to create databases. Progress and a
table of the results go to stderr. docs/benchmarks.md explains the figures.`,
		Example: `  sagaflow bench saga --orders 400 --concurrency 1,16,128 --modes success,compensate`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if cfg.levels, err = parseInts(cfg.concurrency); err != nil {
				return usageError{fmt.Errorf("--concurrency: %w", err)}
			}
			for _, mode := range strings.Split(cfg.modesFlag, ",") {
				if mode != "success" && mode != "compensate" {
					return usageError{fmt.Errorf("--modes: %q is neither success nor compensate", mode)}
				}
				cfg.modes = append(cfg.modes, mode)
			}
			if _, _, err := poolSizes(cfg.maxDBConns); err != nil {
				return usageError{fmt.Errorf("--max-db-conns: %w", err)}
			}
			if !appNameRE.MatchString(cfg.appName) {
				return usageError{fmt.Errorf("--application-name %q: want letters, digits, '-' and '_' (at most 40)", cfg.appName)}
			}
			if cfg.postgres, err = pgschema.Find(cmd.Context(), cfg.postgres); err != nil {
				return err
			}
			if cfg.cpuProfile != "" {
				f, err := os.Create(cfg.cpuProfile)
				if err != nil {
					return fmt.Errorf("--cpuprofile: %w", err)
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return fmt.Errorf("--cpuprofile: %w", err)
				}
				defer pprof.StopCPUProfile()
			}
			return runSagaBench(cmd.Context(), cfg, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	c.Flags().StringVar(&cfg.postgres, "postgres", "", "PostgreSQL DSN (default: $SAGAFLOW_TEST_POSTGRES or 127.0.0.1:5432)")
	c.Flags().StringVar(&cfg.concurrency, "concurrency", "1,16,256", "comma-separated concurrency levels")
	c.Flags().StringVar(&cfg.modesFlag, "modes", "success,compensate", "comma-separated: success, compensate")
	c.Flags().IntVar(&cfg.orders, "orders", 2000, "orders per run (at most 500 at concurrency 1)")
	c.Flags().IntVar(&cfg.maxDBConns, "max-db-conns", 40, fmt.Sprintf("PostgreSQL connections the bench may use in all (at least %d)", minDBConns))
	c.Flags().StringVar(&cfg.appName, "application-name", "sagaflow-bench", "application_name prefix of the bench's PostgreSQL connections")
	c.Flags().StringVar(&cfg.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run (go tool pprof FILE) to this file")
	return c
}

var appNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,40}$`)

func parseInts(s string) ([]int, error) {
	var out []int
	for _, p := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive integer", p)
		}
		out = append(out, n)
	}
	return out, nil
}

// The bench's PostgreSQL connections: the meter's one (to the server's own database, also used
// to create and drop the bench's databases), lib/pq's LISTEN connections, which live outside the
// pools (the orchestrator's relay and timers, each service's relay), and the five pools, which
// share the rest: a third to the orchestrator (it starts, awaits, applies replies, relays), the
// rest evenly to the four services; at least two each.
const (
	meterConns   = 1
	listenConns  = 2 + 4
	minPoolConns = 2
	minDBConns   = meterConns + listenConns + 5*minPoolConns
)

// poolSizes splits maxConns between the orchestrator's pool and each service's pool.
func poolSizes(maxConns int) (orchestrator, service int, err error) {
	if maxConns < minDBConns {
		return 0, 0, fmt.Errorf("%d is fewer than the %d the order system needs (%d LISTEN connections, the meter's, and %d per pool)",
			maxConns, minDBConns, listenConns, minPoolConns)
	}
	pools := maxConns - meterConns - listenConns
	service = max(minPoolConns, pools*2/3/len(order.Services))
	return pools - service*len(order.Services), service, nil
}

// runSagaBench runs every cell, prints a JSON line per cell and then the table.
func runSagaBench(ctx context.Context, cfg sagaBenchConfig, stdout, stderr io.Writer) error {
	stats, err := sqlx.Open("postgres", dsnFor(cfg.postgres, "", "", cfg.appName+"-meter"))
	if err != nil {
		return fmt.Errorf("open meter connection: %w", err)
	}
	defer stats.Close()
	stats.SetMaxOpenConns(meterConns)
	stats.SetMaxIdleConns(meterConns)

	var results []sagaBenchResult
	defer func() { printSagaTable(stderr, results) }()
	for _, mode := range cfg.modes {
		for _, c := range cfg.levels {
			n := cfg.orders
			if c == 1 && n > 500 {
				n = 500 // one at a time, a few hundred sagas measure latency well enough
			}
			r, err := benchSaga(ctx, stats, cfg, mode, c, n, stderr)
			if err != nil {
				return fmt.Errorf("bench saga %s, concurrency %d: %w", mode, c, err)
			}
			results = append(results, r)
			if err := json.NewEncoder(stdout).Encode(r); err != nil {
				return err
			}
		}
	}
	return nil
}

// benchSaga runs one cell on a fresh database and a fresh JetStream store, and measures it.
//
// The database is created for the cell, so that its transaction counters and its backends are
// the bench's alone; every pool is bounded and opened in full before the measurement, with no
// idle or lifetime limit, so that the backends live through the cell and their CPU time can be
// read before and after (benchmeter).
func benchSaga(ctx context.Context, stats *sqlx.DB, cfg sagaBenchConfig, mode string, concurrency, orders int, progress io.Writer) (res sagaBenchResult, err error) {
	res = sagaBenchResult{Mode: mode, Concurrency: concurrency, MaxDBConns: cfg.maxDBConns}
	orchConns, svcConns, err := poolSizes(cfg.maxDBConns)
	if err != nil {
		return res, err
	}
	database := "sagaflow_bench_" + randomHex(6)
	if _, err := stats.ExecContext(ctx, `CREATE DATABASE `+database+` TEMPLATE template0`); err != nil {
		return res, fmt.Errorf("create database %s (the bench measures a database of its own): %w", database, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if _, derr := stats.ExecContext(dctx, `DROP DATABASE IF EXISTS `+database+` WITH (FORCE)`); derr != nil && err == nil {
			err = fmt.Errorf("drop database %s: %w", database, derr)
		}
	}()
	components := append([]string{"orchestrator"}, order.Services...)
	if err := createSchemas(ctx, dsnFor(cfg.postgres, database, "", cfg.appName+"-setup"), components); err != nil {
		return res, err
	}

	dir, err := os.MkdirTemp("", "sagaflow-bench-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	ns, err := natsembed.Start(natsembed.Config{Dir: dir})
	if err != nil {
		return res, err
	}
	defer ns.Shutdown()
	nc, err := connectNATS(ns.ClientURL(), "sagaflow-bench", natsAuthFlags{}, slog.New(slog.DiscardHandler))
	if err != nil {
		return res, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return res, fmt.Errorf("jetstream: %w", err)
	}

	var pools []*sqlx.DB
	closePools := func() {
		for _, db := range pools {
			_ = db.Close() // safe twice; nothing is in flight once the stack has stopped
		}
	}
	defer closePools()
	open := func(name string, size int) (exampleDB, error) {
		dsn := dsnFor(cfg.postgres, database, schemaOf(name), cfg.appName+"-"+name)
		db, err := sqldb.Open(ctx, dsn)
		if err != nil {
			return exampleDB{}, fmt.Errorf("open %s database: %w", name, err)
		}
		db.SetMaxOpenConns(size)
		db.SetMaxIdleConns(size)
		db.SetConnMaxIdleTime(0)
		db.SetConnMaxLifetime(0)
		pools = append(pools, db)
		return exampleDB{db: db, listenDSN: dsn}, nil
	}
	orch, err := open("orchestrator", orchConns)
	if err != nil {
		return res, err
	}
	example := orderExample{nats: nc, orchestrator: orch, services: map[string]exampleDB{}}
	for _, s := range order.Services {
		if example.services[s], err = open(s, svcConns); err != nil {
			return res, err
		}
	}
	if mode == "compensate" {
		example.opts = services.Options{PaymentDeclineRate: 1}
	}
	stack, err := example.newStack(ctx)
	if err != nil {
		return res, err
	}
	for i, db := range pools {
		if err := warm(ctx, db, []int{orchConns, svcConns}[min(i, 1)]); err != nil {
			return res, fmt.Errorf("open %s connections: %w", components[i], err)
		}
	}

	// The driver stops, with the cause, as soon as the stack fails (a database error, say).
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	dctx, stopDriver := context.WithCancelCause(ctx)
	defer stopDriver(nil)
	runErr := make(chan error, 1)
	go func() {
		err := stack.Run(runCtx)
		if err != nil {
			stopDriver(fmt.Errorf("order stack: %w", err))
		}
		runErr <- err
	}()
	stopped := false
	stopStack := func() error {
		stopRun()
		if stopped {
			return nil
		}
		stopped = true
		return <-runErr
	}
	defer func() { _ = stopStack() }()

	meter, err := benchmeter.New(benchmeter.Config{Stats: stats, Database: database, JetStream: js})
	if err != nil {
		return res, err
	}
	if err := meter.Start(dctx); err != nil {
		return res, fmt.Errorf("measure: %w", err)
	}
	fmt.Fprintf(progress, "bench saga: mode %s, concurrency %d, %d orders (database %s, %d+4×%d pooled connections)\n",
		mode, concurrency, orders, database, orchConns, svcConns)
	dcfg := example.driverConfig(stack)
	dcfg.Orders, dcfg.Concurrency, dcfg.Progress, dcfg.Seed = orders, concurrency, progress, 1
	res.Report, err = driver.Run(dctx, dcfg)
	if cause := context.Cause(dctx); cause != nil && ctx.Err() == nil {
		return res, cause // the stack failed: that, not the orders it left unfinished, is the news
	}
	if err != nil {
		return res, err
	}
	if err := meter.Stop(ctx); err != nil {
		return res, fmt.Errorf("measure: %w", err)
	}
	if err := stopStack(); err != nil {
		return res, fmt.Errorf("order stack: %w", err)
	}
	closePools()
	if res.Figures, err = meter.Finish(ctx, res.Completed+res.Compensated+res.Failed); err != nil {
		return res, fmt.Errorf("measure: %w", err)
	}
	if n := res.PGBackends + meterConns; n > cfg.maxDBConns {
		return res, fmt.Errorf("the bench held %d PostgreSQL connections, more than --max-db-conns %d", n, cfg.maxDBConns)
	}
	printSagaRow(progress, res)
	return res, nil
}

// createSchemas creates one schema per component in the database of dsn, on one connection that
// it closes.
func createSchemas(ctx context.Context, dsn string, names []string) error {
	db, err := sqlx.Open("postgres", dsn)
	if err != nil {
		return fmt.Errorf("open setup connection: %w", err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	for _, name := range names {
		if _, err := db.ExecContext(ctx, `CREATE SCHEMA `+schemaOf(name)); err != nil {
			return fmt.Errorf("create schema %s: %w", name, err)
		}
	}
	return nil
}

// schemaOf names the schema of a component ("order" is a reserved word).
func schemaOf(component string) string { return "bench_" + component }

// warm opens all n connections of db's pool now, so that the backends exist before the
// measurement starts (and, with no idle limit, live through it).
func warm(ctx context.Context, db *sqlx.DB, n int) error {
	conns := make([]*sql.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			_ = c.Close() // back to the pool, which keeps it
		}
	}()
	for range n {
		c, err := db.Conn(ctx)
		if err != nil {
			return err
		}
		conns = append(conns, c)
		if err := c.PingContext(ctx); err != nil {
			return err
		}
	}
	return nil
}

// dsnFor returns base pointed at database (empty: base's) with search_path schema (empty: none)
// and application_name app. base is a postgres:// URL or a key=value DSN.
func dsnFor(base, database, schema, app string) string {
	if u, err := url.Parse(base); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		if database != "" {
			u.Path = "/" + database
		}
		q := u.Query()
		if schema != "" {
			q.Set("search_path", schema)
		}
		q.Set("application_name", app)
		u.RawQuery = q.Encode()
		return u.String()
	}
	dsn := base // key=value: lib/pq takes the last value of a repeated key
	if database != "" {
		dsn += " dbname=" + database
	}
	if schema != "" {
		dsn += " search_path=" + schema
	}
	return dsn + " application_name=" + app
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// printSagaRow prints one cell's figures on a line of progress.
func printSagaRow(w io.Writer, r sagaBenchResult) {
	fmt.Fprintf(w, "bench saga: %s C=%d: %.1f sagas/s, p50 %.0f ms, p99 %.0f ms, CPU/saga %s ms (Go %.2f + PostgreSQL %s), %.1f transactions/saga, %.1f publishes/saga\n",
		r.Mode, r.Concurrency, r.SagasPerS, r.P50MS, r.P99MS, optMS(r.CPUMSPerSaga), r.GoCPUMSPerSaga, optMS(r.PGCPUMSPerSaga),
		r.PGXactPerSaga, r.JSPublishesPerSaga)
}

// printSagaTable prints the results as a table, and the notes of any figure that is missing.
func printSagaTable(w io.Writer, results []sagaBenchResult) {
	if len(results) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\tconc\tsagas/s\tp50 ms\tp99 ms\tCPU ms/saga\tGo ms/saga\tPG ms/saga\txact/saga\tpublishes/saga\tPG conns\tstuck\terrors\tviolations\t")
	var notes []string
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.1f\t%.1f\t%s\t%.2f\t%s\t%.2f\t%.2f\t%d\t%d\t%d\t%d\t\n",
			r.Mode, r.Concurrency, r.SagasPerS, r.P50MS, r.P99MS, optMS(r.CPUMSPerSaga), r.GoCPUMSPerSaga, optMS(r.PGCPUMSPerSaga),
			r.PGXactPerSaga, r.JSPublishesPerSaga, r.PGBackends+meterConns, r.Stuck, r.Errors, r.Violations)
		for _, n := range []string{r.PGCPUNote, r.PGStatsNote} {
			if n != "" {
				notes = append(notes, fmt.Sprintf("%s C=%d: %s", r.Mode, r.Concurrency, n))
			}
		}
	}
	_ = tw.Flush()
	for _, n := range notes {
		fmt.Fprintln(w, "note:", n)
	}
}

func optMS(v *float64) string {
	if v == nil {
		return "n/a"
	}
	return strconv.FormatFloat(*v, 'f', 2, 64)
}
