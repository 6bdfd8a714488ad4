package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/engine"
	order "github.com/sagaflow/sagaflow/examples/order"
	"github.com/sagaflow/sagaflow/examples/order/driver"
	"github.com/sagaflow/sagaflow/examples/order/services"
	"github.com/sagaflow/sagaflow/internal/natsembed"
	"github.com/sagaflow/sagaflow/internal/server"
	"github.com/sagaflow/sagaflow/internal/sqldb"
	"github.com/sagaflow/sagaflow/internal/telemetry"
)

type devFlags struct {
	data, httpAddr, example, defsDir, logLevel string
	traceURL                                   string
	natsPort                                   int
	orders, concurrency                        int
	declineRate, shippingRate, stockRate       float64
	seed                                       int64
	exitWhenDone                               bool
	trace                                      traceFlags
}

func newDevCmd() *cobra.Command {
	var f devFlags
	c := &cobra.Command{
		Use:   "dev",
		Short: "Run Sagaflow in one process with nothing installed: embedded NATS, SQLite, the API",
		Long: `Dev runs a complete Sagaflow in one process: an embedded NATS JetStream server, SQLite databases
under --data, the orchestrator, the outbox relay and the HTTP API on 127.0.0.1.

With --example order it also runs the order example's four services (order, inventory, payment,
shipping), each with its own SQLite database, and a driver that places --orders orders, waits for
every saga to finish, checks the business invariants across the four databases and prints one
JSON line (the last line on stdout). Each example run starts from fresh databases under
DATA/example-order.`,
		Example: `  sagaflow dev --example order --orders 100 --payment-decline-rate 0.2 --exit-when-done
  sagaflow dev --definitions ./definitions      # then: sagaflow start NAME --key K --input '{...}'`,
		Args: cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			var errs []error
			if f.example != "" && f.example != "order" {
				errs = append(errs, fmt.Errorf("--example %q: the only example is order", f.example))
			}
			for name, r := range map[string]float64{"--payment-decline-rate": f.declineRate, "--shipping-failure-rate": f.shippingRate, "--out-of-stock-rate": f.stockRate} {
				if r < 0 || r > 1 {
					errs = append(errs, fmt.Errorf("%s %v: want a rate in 0..1", name, r))
				}
			}
			if f.orders < 0 || f.concurrency < 1 {
				errs = append(errs, fmt.Errorf("--orders must be >= 0 and --concurrency >= 1"))
			}
			if f.exitWhenDone && f.example == "" {
				errs = append(errs, fmt.Errorf("--exit-when-done needs --example"))
			}
			var l slog.Level
			if err := l.UnmarshalText([]byte(f.logLevel)); err != nil {
				errs = append(errs, fmt.Errorf("--log-level %q: want debug, info, warn or error", f.logLevel))
			}
			errs = append(errs, f.trace.check(), checkTraceURL(f.traceURL))
			if err := errors.Join(errs...); err != nil {
				return usageError{err}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return runDev(cmd, f) },
	}
	c.Flags().StringVar(&f.data, "data", ".sagaflow", "directory of the SQLite databases and the NATS store")
	c.Flags().StringVar(&f.httpAddr, "http", "127.0.0.1:8080", "address of the HTTP API and the web console (/ui/); empty to serve none")
	c.Flags().StringVar(&f.traceURL, "trace-url", "", consoleTraceURLUsage)
	c.Flags().IntVar(&f.natsPort, "nats-port", 0, "port of the embedded NATS server on 127.0.0.1 (0: a free port)")
	c.Flags().StringVar(&f.defsDir, "definitions", "", "directory of definition files to run")
	c.Flags().StringVar(&f.example, "example", "", "run an example system: order")
	c.Flags().IntVar(&f.orders, "orders", 100, "with --example order: orders to place")
	c.Flags().IntVar(&f.concurrency, "concurrency", 16, "with --example order: orders in flight at once")
	c.Flags().Float64Var(&f.declineRate, "payment-decline-rate", 0, "with --example order: share of payments declined")
	c.Flags().Float64Var(&f.shippingRate, "shipping-failure-rate", 0, "with --example order: share of shipments that fail")
	c.Flags().Float64Var(&f.stockRate, "out-of-stock-rate", 0, "with --example order: share of orders out of stock")
	c.Flags().Int64Var(&f.seed, "seed", 0, "with --example order: seed of the orders and failures (0: random)")
	c.Flags().BoolVar(&f.exitWhenDone, "exit-when-done", false, "with --example: exit after the driver's report (status 1 if any saga is stuck or any invariant broken)")
	c.Flags().StringVar(&f.logLevel, "log-level", "warn", "log level: debug, info, warn or error")
	f.trace.register(c, telemetry.TracesNone, true)
	bindEnv(c)
	return c
}

func runDev(cmd *cobra.Command, f devFlags) error {
	ctx, cancel := context.WithCancel(cmd.Context())
	defer cancel()
	stdout := cmd.OutOrStdout()
	// The logger, the span exporter (--trace stdout) and the driver's progress write to stderr from
	// several goroutines: one lock for all of them.
	stderr := io.Writer(&lockedWriter{w: cmd.ErrOrStderr()})
	var level slog.Level
	_ = level.UnmarshalText([]byte(f.logLevel)) // checked in PreRunE
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	obs, err := newObservability(ctx, orchestratorService, f.trace, stderr, logger)
	if err != nil {
		return err
	}
	defer obs.shutdown()

	dir := f.data
	if f.example != "" {
		// Each example run starts afresh, so its report covers this run's orders only.
		dir = filepath.Join(f.data, "example-"+f.example)
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("clear %s: %w", dir, err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	ns, err := natsembed.Start(natsembed.Config{Dir: filepath.Join(dir, "nats"), Port: f.natsPort, Logger: logger})
	if err != nil {
		return err
	}
	defer ns.Shutdown()
	nc, err := connectNATS(ns.ClientURL(), "sagaflow-dev", natsAuthFlags{}, logger)
	if err != nil {
		return err
	}
	defer nc.Close()
	openSQLite := func(name string) (exampleDB, error) {
		db, err := sqldb.Open(ctx, "sqlite:"+filepath.Join(dir, name+".db"))
		if err != nil {
			return exampleDB{}, fmt.Errorf("open %s database: %w", name, err)
		}
		return exampleDB{db: db}, nil
	}
	orch, err := openSQLite("sagaflow")
	if err != nil {
		return err
	}
	defer orch.db.Close()

	if f.example == "" {
		return runDevServer(ctx, f, orch, nc, ns.ClientURL(), obs, logger, stderr)
	}

	example := orderExample{
		nats: nc, orchestrator: orch, services: map[string]exampleDB{}, httpAddr: f.httpAddr, traceURL: f.traceURL,
		opts: services.Options{PaymentDeclineRate: f.declineRate, ShippingFailureRate: f.shippingRate,
			OutOfStockRate: f.stockRate, Seed: f.seed},
		logger: logger, tracerProvider: obs.tracerProvider, meterProvider: obs.meter.Meter,
		metricsHandler: telemetry.MetricsHandler(obs.meter.Registry),
	}
	for _, name := range order.Services {
		db, err := openSQLite(name)
		if err != nil {
			return err
		}
		defer db.db.Close()
		example.services[name] = db
	}
	stack, err := example.newStack(ctx)
	if err != nil {
		return err
	}
	runErr := make(chan error, 1)
	go func() { runErr <- stack.Run(ctx) }()
	fmt.Fprintf(stderr, "sagaflow dev: NATS %s, API http://%s (metrics at /metrics, console at /ui/), data %s\n", ns.ClientURL(), stack.Node().Addr(), dir)

	dcfg := example.driverConfig(stack)
	dcfg.Orders, dcfg.Concurrency, dcfg.Progress, dcfg.Seed = f.orders, f.concurrency, stderr, f.seed
	report, err := driver.Run(ctx, dcfg)
	if err != nil {
		cancel()
		<-runErr //nolint:errcheck // the driver's error is the one to report
		return fmt.Errorf("driver: %w", err)
	}
	line, err := json.Marshal(report)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, string(line))
	if !f.exitWhenDone {
		fmt.Fprintln(stderr, "sagaflow dev: the example is done; still serving (Ctrl-C to stop)")
		return <-runErr
	}
	cancel()
	if err := <-runErr; err != nil {
		return err
	}
	if report.Stuck > 0 || report.Violations > 0 {
		return exitError{code: exitFailure}
	}
	return nil
}

// runDevServer runs the orchestrator alone on the dev databases, with the definitions of --definitions.
func runDevServer(ctx context.Context, f devFlags, orch exampleDB, nc *nats.Conn, natsURL string, obs *observability, logger *slog.Logger, stderr io.Writer) error {
	reg := definitions.NewRegistry()
	if err := engine.Migrate(ctx, orch.db); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if f.defsDir != "" {
		// Through the catalog, as serve does: versions whose files are gone still finish.
		loader := &definitionsLoader{dir: f.defsDir, db: orch.db, reg: reg, log: logger}
		if _, err := loader.load(ctx); err != nil {
			return fmt.Errorf("load definitions: %w", err)
		}
	}
	node, err := server.New(ctx, server.Config{
		DB: orch.db, NATS: nc, Definitions: reg, Orchestrator: true, Relay: true, HTTPAddr: f.httpAddr, TraceURL: f.traceURL, Logger: logger,
		TracerProvider: obs.meter.Tracer, MeterProvider: obs.meter.Meter, MetricsHandler: telemetry.MetricsHandler(obs.meter.Registry),
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "sagaflow dev: NATS %s, API http://%s, console http://%s/ui/, %d definition(s), data %s (Ctrl-C to stop)\n",
		natsURL, node.Addr(), node.Addr(), len(reg.List()), f.data)
	return node.Run(ctx)
}
