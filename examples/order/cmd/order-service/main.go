// Command order-service runs one service of the order example (order, inventory, payment or
// shipping) as its own process: its database, a participant consuming its saga commands from
// JetStream, and an outbox relay publishing its replies. See examples/order/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/jmoiron/sqlx"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sagaflow/sagaflow/examples/order"
	"github.com/sagaflow/sagaflow/examples/order/services"
	"github.com/sagaflow/sagaflow/outbox"
	"github.com/sagaflow/sagaflow/participant"
)

type flags struct {
	service, db, nats, logLevel string
	metrics, trace              string
	opts                        services.Options
	latency                     time.Duration
	unavailable                 float64
	batch, maxDeliver           int
	dbMaxConns                  int
	createStreams               bool
	namespace                   string
	natsAuth                    natsAuth
	startupTimeout              time.Duration
}

func parse(args []string) (flags, error) {
	var f flags
	fs := flag.NewFlagSet("order-service", flag.ContinueOnError)
	fs.StringVar(&f.service, "service", "", "the service to run: "+strings.Join(order.Services, "|")+" (required)")
	fs.StringVar(&f.db, "db", "", "the service's own database: postgres://… or sqlite:PATH (required)")
	fs.StringVar(&f.nats, "nats", nats.DefaultURL, "NATS server URL(s), comma-separated")
	f.natsAuth.register(fs)
	fs.Float64Var(&f.opts.PaymentDeclineRate, "payment-decline-rate", 0, "payment: share of orders declined (0..1)")
	fs.Float64Var(&f.opts.ShippingFailureRate, "shipping-failure-rate", 0, "shipping: share of orders that cannot ship (0..1)")
	fs.Float64Var(&f.opts.OutOfStockRate, "out-of-stock-rate", 0, "inventory: share of orders answered out of stock (0..1)")
	fs.DurationVar(&f.latency, "latency", 0, "added to every command's handling (a slow service)")
	fs.Float64Var(&f.unavailable, "unavailable-rate", 0, "share of handlings that fail transiently and are redelivered; 1 = unavailable")
	fs.Int64Var(&f.opts.Seed, "seed", 0, "seed of the business failure decisions (0: random)")
	fs.Int64Var(&f.opts.InitialStock, "initial-stock", services.DefaultInitialStock, "inventory: stock of each SKU in a new database")
	fs.DurationVar(&f.startupTimeout, "startup-timeout", 2*time.Minute, "how long to wait at start for the database and NATS to answer (a server still starting or recovering) before giving up")
	fs.IntVar(&f.dbMaxConns, "db-max-conns", 8, "most open PostgreSQL connections (idle ones kept up to the same number)")
	fs.IntVar(&f.batch, "batch", 0, "commands handled per transaction (default 32)")
	fs.IntVar(&f.maxDeliver, "max-deliver", 0, "deliveries of a failing command before the dead-letter stream (default 10)")
	fs.StringVar(&f.namespace, "namespace", os.Getenv("SAGAFLOW_NAMESPACE"), "installation namespace on a shared NATS account, as given to sagaflow serve (default $SAGAFLOW_NAMESPACE; empty: none)")
	fs.BoolVar(&f.createStreams, "create-streams", true, "create or update Sagaflow's JetStream streams (single replica) at start")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug|info|warn|error")
	fs.StringVar(&f.metrics, "metrics", "", "address to serve Prometheus metrics at /metrics (\"0.0.0.0:9464\"); empty: none")
	fs.StringVar(&f.trace, "trace", "auto", "where spans go: "+strings.Join(traceModes, "|")+
		" (auto: OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set; OTEL_SERVICE_NAME defaults to --service)")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	errs := f.natsAuth.check()
	if f.service == "" {
		errs = append(errs, errors.New("--service is required"))
	}
	if f.db == "" {
		errs = append(errs, errors.New("--db is required"))
	}
	if f.startupTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--startup-timeout %s: must be positive", f.startupTimeout))
	}
	if f.dbMaxConns < 1 {
		errs = append(errs, fmt.Errorf("--db-max-conns %d: must be at least 1", f.dbMaxConns))
	}
	if !slices.Contains(traceModes, f.trace) {
		errs = append(errs, fmt.Errorf("--trace %q: want one of %s", f.trace, strings.Join(traceModes, ", ")))
	}
	for name, r := range map[string]float64{"--payment-decline-rate": f.opts.PaymentDeclineRate, "--shipping-failure-rate": f.opts.ShippingFailureRate,
		"--out-of-stock-rate": f.opts.OutOfStockRate, "--unavailable-rate": f.unavailable} {
		if r < 0 || r > 1 {
			errs = append(errs, fmt.Errorf("%s %v: want 0..1", name, r))
		}
	}
	f.opts.Faults = map[string]order.Faults{f.service: {Latency: f.latency, UnavailableRate: f.unavailable}}
	return f, errors.Join(errs...)
}

func main() {
	f, err := parse(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "order-service:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, f); err != nil {
		fmt.Fprintln(os.Stderr, "order-service:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, f flags) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("service", f.service)

	tel, err := setupTelemetry(ctx, f.service, f.trace)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tel.shutdown(sctx) // flushes the last spans
	}()
	if f.metrics != "" {
		ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", f.metrics)
		if err != nil {
			return fmt.Errorf("--metrics: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", tel.metricsHandler())
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
	}

	// A service started while its database or NATS is down or recovering (a crash, a rolling
	// restart) waits for them, so that nothing needs restarting by hand once they are back.
	db, err := untilUp(ctx, log, f.startupTimeout, "database", func(ctx context.Context) (*sqlx.DB, error) {
		db, err := order.OpenDB(ctx, f.db)
		if err != nil {
			return nil, err
		}
		if db.DriverName() == "postgres" {
			// The consumer's batches, the relay and the barrier pruning share this pool.
			db.SetMaxOpenConns(f.dbMaxConns)
			db.SetMaxIdleConns(f.dbMaxConns)
		}
		if err := services.Migrate(ctx, f.service, db, f.opts); err != nil {
			_ = db.Close()
			return nil, err
		}
		return db, nil
	})
	if err != nil {
		return err
	}
	defer db.Close()
	authOpts, err := f.natsAuth.options()
	if err != nil {
		return err
	}
	nc, err := untilUp(ctx, log, f.startupTimeout, "NATS", func(context.Context) (*nats.Conn, error) {
		nc, err := nats.Connect(f.nats, append([]nats.Option{nats.Name("sagaflow-example-" + f.service), nats.MaxReconnects(-1)}, authOpts...)...)
		if err != nil {
			return nil, fmt.Errorf("connect to NATS %s: %w", redactURLs(f.nats), err)
		}
		return nc, nil
	})
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	relayCfg := outbox.RelayConfig{Logger: log, Name: f.service, TracerProvider: tel.tracer, MeterProvider: tel.meter}
	if db.DriverName() == "postgres" {
		relayCfg.ListenDSN = f.db
	}
	// The participant runs the relay of the service's outbox itself, and (unless told not to)
	// creates the streams it needs.
	p, err := participant.New(db, js, &participant.Config{
		Service: f.service, Namespace: f.namespace, Logger: log, Batch: f.batch, MaxDeliver: f.maxDeliver,
		Relay: &relayCfg, DisableStreamSetup: !f.createStreams,
		TracerProvider: tel.tracer, MeterProvider: tel.meter,
	})
	if err != nil {
		return err
	}
	if err := services.Register(f.service, p, f.opts); err != nil {
		return err
	}
	log.InfoContext(ctx, "order example service running", "nats", redactURLs(f.nats))
	return p.Run(ctx)
}

// untilUp calls open until it succeeds, with exponential backoff (250 ms up to 5 s), for at most
// timeout; each failure is logged at Warn with what it was waiting for. It returns the last error
// when timeout passes, or ctx's error.
func untilUp[T any](ctx context.Context, log *slog.Logger, timeout time.Duration, what string, open func(context.Context) (T, error)) (T, error) {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval = 250*time.Millisecond, 5*time.Second
	return backoff.Retry(ctx, func() (T, error) { return open(ctx) },
		backoff.WithBackOff(b), backoff.WithMaxElapsedTime(timeout),
		backoff.WithNotify(func(err error, next time.Duration) {
			log.WarnContext(ctx, "waiting for the "+what, "retry_in", next.Round(time.Millisecond).String(), "err", err)
		}))
}
