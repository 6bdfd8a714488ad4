package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/engine"
	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/server"
	"github.com/sagaflow/sagaflow/internal/sqldb"
	"github.com/sagaflow/sagaflow/internal/telemetry"
	"github.com/sagaflow/sagaflow/outbox"
)

// serverFlags are the flags of the commands that connect to a database and the bus.
type serverFlags struct {
	db string
	// dbMaxConns bounds the PostgreSQL pool (open and idle connections).
	dbMaxConns int
	nats       string
	natsAuth   natsAuthFlags
	logFormat  string
	logLevel   string
	// namespace prefixes streams, subjects and durable consumers (bus.Namespace).
	namespace string
	// startupTimeout bounds the wait at start for the database and NATS to answer.
	startupTimeout time.Duration
}

func (f *serverFlags) register(c *cobra.Command, needNATS bool) {
	c.Flags().StringVar(&f.db, "db", "", "database URL: postgres://user@host/db?sslmode=disable or sqlite:PATH (required)")
	c.Flags().IntVar(&f.dbMaxConns, "db-max-conns", DefaultDBMaxConns, "most open PostgreSQL connections of this process (idle ones kept up to the same number); SQLite always uses 4")
	c.Flags().DurationVar(&f.startupTimeout, "startup-timeout", 2*time.Minute, "how long to wait at start for the database (and NATS) to answer — a server still starting or recovering — retrying with backoff, before giving up")
	if needNATS {
		c.Flags().StringVar(&f.nats, "nats", nats.DefaultURL, "NATS server URLs, comma-separated")
		f.natsAuth.register(c)
		c.Flags().StringVar(&f.namespace, "namespace", "", "installation namespace on a shared NATS account ([a-z0-9-], 1..32): prefixes stream, subject and durable consumer names; empty: no prefix")
	}
	c.Flags().StringVar(&f.logFormat, "log-format", "json", "log format: json or text")
	c.Flags().StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
}

func (f *serverFlags) check() error {
	if f.db == "" {
		return usageError{fmt.Errorf("--db (or $SAGAFLOW_DB) is required")}
	}
	if f.dbMaxConns < 1 {
		return usageError{fmt.Errorf("--db-max-conns %d: must be at least 1", f.dbMaxConns)}
	}
	if f.startupTimeout <= 0 {
		return usageError{fmt.Errorf("--startup-timeout %s: must be positive", f.startupTimeout)}
	}
	if f.logFormat != "json" && f.logFormat != "text" {
		return usageError{fmt.Errorf("--log-format %q: want json or text", f.logFormat)}
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(f.logLevel)); err != nil {
		return usageError{fmt.Errorf("--log-level %q: want debug, info, warn or error", f.logLevel)}
	}
	if err := bus.Namespace(f.namespace).Validate(); err != nil {
		return usageError{fmt.Errorf("--namespace: %w", err)}
	}
	return f.natsAuth.check()
}

func (f *serverFlags) logger(w io.Writer) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(f.logLevel)) // checked by check
	opts := &slog.HandlerOptions{Level: l}
	if f.logFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// listenDSN is the DSN for LISTEN/NOTIFY: the database URL on PostgreSQL, nothing on SQLite.
func listenDSN(url string) string {
	if strings.HasPrefix(url, "postgres://") || strings.HasPrefix(url, "postgresql://") {
		return url
	}
	return ""
}

// connectNATS connects to the bus and keeps reconnecting forever: a NATS restart must not stop
// a server (the relay and the consumers resume when it is back).
func connectNATS(urls, name string, auth natsAuthFlags, logger *slog.Logger) (*nats.Conn, error) {
	authOpts, err := auth.options()
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(urls, append([]nats.Option{nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				logger.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { logger.Info("nats reconnected", "url", c.ConnectedUrlRedacted()) }),
		// Asynchronous errors, such as a permission violation, would otherwise go unnoticed.
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { logger.Error("nats error", "err", err) })}, authOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS %s: %w", redactNATSURLs(urls), err)
	}
	return nc, nil
}

// DefaultDBMaxConns is --db-max-conns' default: enough for a node's concurrent work (reply
// batches, timers, the relay, retention, the HTTP API) while six processes stay inside
// PostgreSQL's default max_connections of 100.
const DefaultDBMaxConns = 16

// openDB opens f.db (see openDB), waiting up to --startup-timeout for the server to answer.
func (f *serverFlags) openDB(ctx context.Context, logger *slog.Logger) (*sqlx.DB, error) {
	return untilUp(ctx, logger, f.startupTimeout, "database", func(ctx context.Context) (*sqlx.DB, error) {
		return openDB(ctx, f.db, f.dbMaxConns)
	})
}

// connectNATS connects to f.nats (see connectNATS), waiting up to --startup-timeout for a server
// to answer.
func (f *serverFlags) connectNATS(ctx context.Context, name string, logger *slog.Logger) (*nats.Conn, error) {
	return untilUp(ctx, logger, f.startupTimeout, "NATS", func(context.Context) (*nats.Conn, error) {
		return connectNATS(f.nats, name, f.natsAuth, logger)
	})
}

// untilUp calls open until it succeeds, with exponential backoff (250 ms up to 5 s), for at most
// timeout (at least one call), so that a process started while its database or NATS is down or
// recovering waits for it instead of exiting; each failure is logged at Warn. It returns the last
// error once timeout has passed, or ctx's error.
func untilUp[T any](ctx context.Context, logger *slog.Logger, timeout time.Duration, what string, open func(context.Context) (T, error)) (T, error) {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval = 250*time.Millisecond, 5*time.Second
	return backoff.Retry(ctx, func() (T, error) { return open(ctx) },
		backoff.WithBackOff(b), backoff.WithMaxElapsedTime(max(timeout, time.Nanosecond)),
		backoff.WithNotify(func(err error, next time.Duration) {
			logger.WarnContext(ctx, "waiting for the "+what, "retry_in", next.Round(time.Millisecond).String(), "err", err)
		}))
}

// openDB opens the database at url; on PostgreSQL the pool holds at most maxConns connections, and
// keeps as many idle (so a busy node does not reconnect between bursts). SQLite keeps sqldb.Open's
// pool of 4 (one writer at a time is all it allows).
func openDB(ctx context.Context, url string, maxConns int) (*sqlx.DB, error) {
	db, err := sqldb.Open(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", sqldb.Redact(url), err)
	}
	if sqldb.DialectOf(db) == sqldb.Postgres {
		db.SetMaxOpenConns(maxConns)
		db.SetMaxIdleConns(maxConns)
	}
	return db, nil
}

func newServeCmd() *cobra.Command {
	var f serverFlags
	var defsDir, httpAddr, traceURL string
	var relay, migrate bool
	var streams bus.StreamsConfig
	var replyBatch, maxDeliver int
	var retention, inboxRetention time.Duration
	var tf traceFlags
	var sec apiSecurityFlags
	c := &cobra.Command{
		Use:   "serve",
		Short: "Run the orchestrator (and by default the outbox relay and the HTTP API)",
		Long: `Serve runs a production orchestrator node: it consumes replies, fires timers and triggers, starts
sagas from the HTTP API, and relays its outbox to JetStream. Run as many replicas as you like: they
share the work through a durable consumer and row locks. Every flag can be set by its SAGAFLOW_*
environment variable.`,
		Example: `  sagaflow serve --db postgres://postgres@127.0.0.1/sagaflow?sslmode=disable \
    --nats nats://127.0.0.1:4222 --definitions ./definitions`,
		Args: cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			if err := f.check(); err != nil {
				return err
			}
			if defsDir == "" {
				return usageError{fmt.Errorf("--definitions (or $SAGAFLOW_DEFINITIONS) is required")}
			}
			if err := tf.check(); err != nil {
				return usageError{err}
			}
			if err := sec.check(httpAddr); err != nil {
				return usageError{err}
			}
			return checkTraceURL(traceURL)
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			logger := f.logger(cmd.ErrOrStderr())
			apiAuth, apiTLS, err := sec.build(httpAddr, logger)
			if err != nil {
				return err
			}
			obs, err := newObservability(ctx, "sagaflow", tf, cmd.ErrOrStderr(), logger)
			if err != nil {
				return err
			}
			defer obs.shutdown()
			// Every file is validated before anything is opened: a bad file fails fast.
			if err := definitions.NewRegistry().LoadDir(defsDir); err != nil {
				return fmt.Errorf("load definitions: %w", err)
			}
			db, err := f.openDB(ctx, logger)
			if err != nil {
				return err
			}
			defer db.Close()
			if migrate {
				if err := engine.Migrate(ctx, db); err != nil {
					return fmt.Errorf("migrate: %w", err)
				}
			} else if err := engine.CheckMigrations(ctx, db); err != nil {
				return fmt.Errorf("--migrate=false: %w", err)
			}
			reg := definitions.NewRegistry()
			loader := &definitionsLoader{dir: defsDir, db: db, reg: reg, log: logger}
			if _, err := loader.load(ctx); err != nil {
				return fmt.Errorf("load definitions: %w", err)
			}
			// SIGHUP reloads the definitions directory (new versions; none is ever dropped).
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			nc, err := f.connectNATS(ctx, "sagaflow-serve", logger)
			if err != nil {
				return err
			}
			defer nc.Close()
			streams.Namespace = bus.Namespace(f.namespace)
			node, err := server.New(ctx, server.Config{
				DB: db, ListenDSN: listenDSN(f.db), NATS: nc, Definitions: reg,
				Orchestrator: true, Relay: relay, HTTPAddr: httpAddr, Auth: apiAuth, TLS: apiTLS, Streams: streams, TraceURL: traceURL,
				Engine: engine.Config{ReplyBatch: replyBatch, MaxDeliver: maxDeliver, Retention: retention, InboxRetention: inboxRetention}, Logger: logger,
				TracerProvider: obs.meter.Tracer, MeterProvider: obs.meter.Meter,
				MetricsHandler: telemetry.MetricsHandler(obs.meter.Registry),
			})
			if err != nil {
				return err
			}
			logger.Info("sagaflow serving", "definitions", len(reg.List()), "http", node.Addr(), "api_auth", apiAuth != nil, "api_tls", apiTLS != nil,
				"relay", relay, "db", sqldb.Redact(f.db))
			runCtx, stop := context.WithCancel(ctx)
			watched := make(chan struct{})
			go func() {
				defer close(watched)
				loader.watch(runCtx, hup)
			}()
			err = node.Run(runCtx)
			stop()
			<-watched
			return err
		},
	}
	f.register(c, true)
	c.Flags().StringVar(&defsDir, "definitions", "", "directory of definition files (*.yaml, *.yml, *.json) (required)")
	c.Flags().StringVar(&httpAddr, "http", "127.0.0.1:8080", "address of the HTTP API and the web console (/ui/); empty to serve none")
	c.Flags().StringVar(&traceURL, "trace-url", "", consoleTraceURLUsage)
	c.Flags().BoolVar(&relay, "relay", true, "relay the outbox to JetStream in this process (or run sagaflow relay)")
	c.Flags().BoolVar(&migrate, "migrate", true, "apply database migrations at start; false: only check they are applied (for a role without DDL rights, see docs/security.md)")
	c.Flags().IntVar(&streams.Replicas, "stream-replicas", 1, "replicas of each JetStream stream (3 on a NATS cluster)")
	c.Flags().DurationVar(&streams.Duplicates, "duplicate-window", 2*time.Minute, "JetStream duplicate window of the streams")
	c.Flags().IntVar(&replyBatch, "reply-batch", 64, "most replies applied in one transaction")
	c.Flags().IntVar(&maxDeliver, "max-deliver", 10, "deliveries of a reply or trigger event that cannot be applied before it goes to the dead-letter stream; --inbox-retention must be at least this × 30s (the ack wait) + 2m")
	c.Flags().DurationVar(&retention, "retention", 720*time.Hour, "delete completed and compensated sagas and their history this long after they finished (0: keep forever)")
	c.Flags().DurationVar(&inboxRetention, "inbox-retention", engine.DefaultInboxRetention, "keep the ids of applied replies this long, to drop duplicates")
	sec.register(c)
	tf.register(c, telemetry.TracesAuto, false)
	bindEnv(c)
	return c
}

// consoleTraceURLUsage is the help of serve's and dev's --trace-url.
const consoleTraceURLUsage = "link of a saga's trace in the web console: your tracing UI's URL with {trace_id} in it, e.g. http://jaeger:16686/trace/{trace_id}; empty: the trace id only"

// checkTraceURL refuses a --trace-url without {trace_id}: every link would point at the same page.
func checkTraceURL(u string) error {
	if u != "" && !strings.Contains(u, "{trace_id}") {
		return usageError{fmt.Errorf("--trace-url %q: want a URL with {trace_id} in it, e.g. http://jaeger:16686/trace/{trace_id}", u)}
	}
	return nil
}

func newRelayCmd() *cobra.Command {
	var f serverFlags
	var batch int
	var relayMigrate bool
	var retention time.Duration
	var metricsAddr, name string
	var tf traceFlags
	c := &cobra.Command{
		Use:   "relay",
		Short: "Relay a database's outbox to JetStream",
		Long: `Relay publishes the rows of a database's outbox to JetStream and marks them published. Any
number of relays may run on one PostgreSQL database (they claim rows with SKIP LOCKED). Use it for
a service's database, or for the orchestrator's when "sagaflow serve --relay=false".`,
		Example: `  sagaflow relay --db postgres://postgres@127.0.0.1/payments?sslmode=disable --nats nats://127.0.0.1:4222`,
		Args:    cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			if err := f.check(); err != nil {
				return err
			}
			if err := tf.check(); err != nil {
				return usageError{err}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			logger := f.logger(cmd.ErrOrStderr())
			obs, err := newObservability(ctx, "sagaflow-relay", tf, cmd.ErrOrStderr(), logger)
			if err != nil {
				return err
			}
			defer obs.shutdown()
			db, err := f.openDB(ctx, logger)
			if err != nil {
				return err
			}
			defer db.Close()
			if relayMigrate {
				if err := outbox.Migrate(ctx, db); err != nil {
					return fmt.Errorf("migrate outbox: %w", err)
				}
			} else if err := outbox.CheckMigrations(ctx, db); err != nil {
				return fmt.Errorf("--migrate=false: %w", err)
			}
			nc, err := f.connectNATS(ctx, "sagaflow-relay", logger)
			if err != nil {
				return err
			}
			defer nc.Close()
			node, err := server.New(ctx, server.Config{
				DB: db, ListenDSN: listenDSN(f.db), NATS: nc, Relay: true, Logger: logger,
				Streams:        bus.StreamsConfig{Namespace: bus.Namespace(f.namespace)},
				RelayConfig:    outbox.RelayConfig{BatchSize: batch, Retention: retention, Name: name},
				TracerProvider: obs.meter.Tracer, MeterProvider: obs.meter.Meter,
			})
			if err != nil {
				return err
			}
			if metricsAddr != "" {
				stop, err := serveMetrics(ctx, metricsAddr, obs, node.HealthHandler())
				if err != nil {
					return err
				}
				defer stop()
			}
			logger.Info("sagaflow relaying", "db", sqldb.Redact(f.db))
			return node.Run(ctx)
		},
	}
	f.register(c, true)
	c.Flags().IntVar(&batch, "batch", 0, "rows claimed and published per batch (0: the relay's default)")
	c.Flags().BoolVar(&relayMigrate, "migrate", true, "create the outbox tables at start; false: only check they exist (for a role without DDL rights)")
	c.Flags().DurationVar(&retention, "retention", 0, "keep published rows this long (0: delete at once)")
	c.Flags().StringVar(&name, "name", "outbox", "name of this outbox in metrics (the \"outbox\" label) and logs")
	c.Flags().StringVar(&metricsAddr, "metrics", "", "address to serve Prometheus metrics at /metrics, and /healthz and /readyz (e.g. 0.0.0.0:9464); empty: none")
	tf.register(c, telemetry.TracesAuto, false)
	bindEnv(c)
	return c
}

func newMigrateCmd() *cobra.Command {
	var f serverFlags
	c := &cobra.Command{
		Use:   "migrate",
		Short: "Apply the orchestrator's database migrations",
		Example: `  sagaflow migrate --db postgres://postgres@127.0.0.1/sagaflow?sslmode=disable
  sagaflow migrate --db sqlite:./sagaflow.db`,
		Args:    cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error { return f.check() },
		RunE: func(cmd *cobra.Command, _ []string) error {
			db, err := f.openDB(cmd.Context(), f.logger(cmd.ErrOrStderr()))
			if err != nil {
				return err
			}
			defer db.Close()
			if err := engine.Migrate(cmd.Context(), db); err != nil {
				return fmt.Errorf("migrate: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "migrated %s\n", sqldb.Redact(f.db))
			return nil
		},
	}
	f.register(c, false)
	bindEnv(c)
	return c
}
