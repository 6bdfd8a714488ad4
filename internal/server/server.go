// Package server is Sagaflow's one wiring point: the only code that assembles its components into
// running processes. New builds an orchestrator node (the engine, the outbox relay of its database
// and the HTTP API, with the dead-letter routes over its JetStream), NewParticipant a participant
// node (a service's participant and the relay of the service's database), and NewStack both kinds
// in one process. "sagaflow serve", "sagaflow dev", "sagaflow bench saga" and the end-to-end tests
// all run these, so what the tests prove is what ships.
package server

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/engine"
	"github.com/sagaflow/sagaflow/engine/httpapi"
	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/console"
	"github.com/sagaflow/sagaflow/internal/dlq"
	"github.com/sagaflow/sagaflow/outbox"
	"github.com/sagaflow/sagaflow/participant"
)

// Config configures an orchestrator node.
type Config struct {
	// DB is the orchestrator's database, already migrated (engine.Migrate). Required.
	DB *sqlx.DB
	// ListenDSN is DB's PostgreSQL DSN, for LISTEN/NOTIFY wake-ups of the relay and the timers;
	// empty on SQLite.
	ListenDSN string
	// NATS is the connection to the bus. Required.
	NATS *nats.Conn
	// Definitions are the definitions the engine runs. Required when Orchestrator is set.
	Definitions *definitions.Registry
	// Orchestrator runs the engine's reply consumer, timers and triggers. The API works without
	// it (it starts, reads, cancels and redrives sagas through the database).
	Orchestrator bool
	// Relay runs the outbox relay of DB in this process.
	Relay bool
	// HTTPAddr is where the API and the web console (/ui/, internal/console) listen
	// ("127.0.0.1:8080"); empty: neither.
	HTTPAddr string
	// Auth, when set, requires a bearer token on the API (not on /healthz, /readyz and /metrics),
	// and a sign-in with one of the same tokens on the web console (/ui/), and records the token's
	// name as the actor; nil: no authentication.
	Auth *httpapi.Auth
	// TLS, when set, serves the API over TLS with it (its Certificates, and ClientCAs with
	// ClientAuth for mutual TLS); nil: plain HTTP.
	TLS *tls.Config
	// TraceURL links a saga's page in the web console to its trace: a URL with {trace_id} in it
	// ("http://jaeger:16686/trace/{trace_id}"); empty: the console shows the trace id only.
	TraceURL string
	// HTTPLimits bounds the API's connections (timeouts, header size); zero: the defaults.
	HTTPLimits HTTPLimits
	// Streams configures the JetStream streams, created or updated at start. Its Namespace is the
	// node's: the engine's and the dead-letter API's too (Engine.Namespace is overridden).
	Streams bus.StreamsConfig
	// Engine tunes the engine; its DB, JetStream, Definitions, Logger, ListenDSN and OnCommit are
	// set by the node.
	Engine engine.Config
	// RelayConfig tunes the relay; its ListenDSN and Logger are set by the node.
	RelayConfig outbox.RelayConfig
	// WrapPublisherFunc, when set, wraps the relay's publisher. Tests use it to make a bus that
	// loses or duplicates messages.
	WrapPublisherFunc func(message.Publisher) message.Publisher
	// TracerProvider and MeterProvider are the engine's and the relay's unless Engine or
	// RelayConfig name their own; nil: the global providers.
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	// MetricsHandler, when set, is served at /metrics beside the API (the Prometheus exporter's).
	MetricsHandler http.Handler
	// Logger receives every component's logs; nil discards them.
	Logger *slog.Logger
}

// Node is a running (or ready to run) orchestrator node.
type Node struct {
	cfg    Config
	js     jetstream.JetStream
	relay  *outbox.Relay
	engine *engine.Engine
	dlq    *dlq.Queue
	ui     *console.Console
	ln     net.Listener
}

// New checks the configuration, creates or updates the streams, builds the components and, when
// HTTPAddr is set, binds the API's listener (so HTTPAddr can be ":0" and Addr tells the port).
func New(ctx context.Context, cfg Config) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var errs []error
	if cfg.DB == nil {
		errs = append(errs, errors.New("server config: DB is required"))
	}
	if cfg.NATS == nil {
		errs = append(errs, errors.New("server config: NATS is required"))
	}
	if cfg.Definitions == nil {
		cfg.Definitions = definitions.NewRegistry()
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	js, err := jetstream.New(cfg.NATS)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	if err := bus.EnsureStreams(ctx, js, cfg.Streams); err != nil {
		return nil, fmt.Errorf("ensure streams: %w", err)
	}
	n := &Node{cfg: cfg, js: js}
	if cfg.Relay {
		rcfg := cfg.RelayConfig
		rcfg.Name = cmp.Or(rcfg.Name, "sagaflow")
		rcfg.ClaimDelay = cmp.Or(rcfg.ClaimDelay, participant.DefaultClaimDelay)
		rcfg.TracerProvider = cmp.Or(rcfg.TracerProvider, cfg.TracerProvider)
		rcfg.MeterProvider = cmp.Or(rcfg.MeterProvider, cfg.MeterProvider)
		n.relay = newRelay(js, cfg.DB, cfg.ListenDSN, rcfg, cfg.WrapPublisherFunc, cfg.Logger)
	}
	ecfg := cfg.Engine
	ecfg.DB, ecfg.JetStream, ecfg.Definitions = cfg.DB, js, cfg.Definitions
	ecfg.Namespace = string(cfg.Streams.Namespace)
	ecfg.Logger, ecfg.ListenDSN = cfg.Logger.With("component", "engine"), cfg.ListenDSN
	ecfg.TracerProvider = cmp.Or(ecfg.TracerProvider, cfg.TracerProvider)
	ecfg.MeterProvider = cmp.Or(ecfg.MeterProvider, cfg.MeterProvider)
	if n.relay != nil {
		ecfg.Relay = n.relay // the engine's commands go out from memory right after each commit
	}
	if n.engine, err = engine.New(ecfg); err != nil {
		n.close()
		return nil, fmt.Errorf("engine: %w", err)
	}
	if cfg.HTTPAddr != "" {
		n.dlq = dlq.New(js, dlq.Config{Namespace: cfg.Streams.Namespace, Logger: cfg.Logger})
		n.ui, err = console.New(console.Config{Engine: n.engine, Definitions: cfg.Definitions, DLQ: n.dlq, Auth: cfg.Auth,
			TraceURL: cfg.TraceURL, Logger: cfg.Logger})
		if err != nil {
			n.close()
			return nil, err
		}
		if n.ln, err = (&net.ListenConfig{}).Listen(ctx, "tcp", cfg.HTTPAddr); err != nil {
			n.close()
			return nil, fmt.Errorf("http api: listen on %s: %w", cfg.HTTPAddr, err)
		}
	}
	return n, nil
}

// newRelay builds the relay of db publishing to js, its publisher wrapped by wrap when set.
func newRelay(js jetstream.JetStream, db *sqlx.DB, listenDSN string, rcfg outbox.RelayConfig,
	wrap func(message.Publisher) message.Publisher, logger *slog.Logger) *outbox.Relay {
	rcfg.ListenDSN = listenDSN
	rcfg.Logger = logger.With("component", "relay")
	rcfg.PublisherDecorator = decorator(wrap)
	return outbox.NewRelay(db, js, &rcfg)
}

// decorator turns a WrapPublisherFunc into the relay's publisher decorator (nil for nil).
func decorator(wrap func(message.Publisher) message.Publisher) message.PublisherDecorator {
	if wrap == nil {
		return nil
	}
	return func(p message.Publisher) (message.Publisher, error) { return wrap(p), nil }
}

// Engine returns the node's engine: the Go client of the orchestrator.
func (n *Node) Engine() *engine.Engine { return n.engine }

// Relay returns the node's relay, or nil when it runs none.
func (n *Node) Relay() *outbox.Relay { return n.relay }

// Addr returns the API's address, or "" without an API.
func (n *Node) Addr() string {
	if n.ln == nil {
		return ""
	}
	return n.ln.Addr().String()
}

// Run runs the node's components until ctx is done, then stops them gracefully and returns nil;
// if one fails, the others are stopped and its error is returned.
func (n *Node) Run(ctx context.Context) error {
	defer n.close()
	g, gctx := errgroup.WithContext(ctx)
	if n.relay != nil {
		g.Go(func() error { return wrapErr("relay", n.relay.Run(gctx)) })
	}
	if n.cfg.Orchestrator {
		g.Go(func() error { return wrapErr("engine", n.engine.Run(gctx)) })
	}
	// Streams nobody publishes to or consumes from yet come back after a lost store too.
	g.Go(func() error {
		bus.KeepStreams(gctx, n.js, 0, n.cfg.Logger.With("component", "bus"), n.cfg.MeterProvider)
		return nil
	})
	if n.ln != nil {
		mux := http.NewServeMux()
		if n.cfg.MetricsHandler != nil {
			mux.Handle("GET /metrics", n.cfg.MetricsHandler)
		}
		mux.Handle("GET /readyz", httpapi.ReadyHandler(ReadyChecks(n.cfg.DB, n.cfg.NATS, n.js)...))
		mux.Handle("/", httpapi.NewHandler(n.engine, n.cfg.Definitions, n.cfg.Logger))
		dlqAPI := httpapi.DLQHandler(n.dlq, n.cfg.Logger)
		mux.Handle("/v1/dlq", dlqAPI)
		mux.Handle("/v1/dlq/", dlqAPI)
		// The console signs browsers in with the API's tokens (a cookie, not a bearer header), so it
		// sits beside the API's authentication, not behind it.
		root := http.NewServeMux()
		root.Handle(console.Prefix, n.ui)
		root.Handle("/", n.cfg.Auth.Middleware(mux))
		srv := NewHTTPServer(root, n.cfg.HTTPLimits)
		ln := n.ln
		if n.cfg.TLS != nil {
			srv.TLSConfig = n.cfg.TLS
			ln = tls.NewListener(ln, n.cfg.TLS)
		}
		g.Go(func() error {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("http api: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			sctx, cancel := context.WithTimeout(context.WithoutCancel(gctx), 10*time.Second)
			defer cancel()
			return srv.Shutdown(sctx)
		})
	}
	return g.Wait()
}

func (n *Node) close() {
	if n.ln != nil {
		_ = n.ln.Close() // already closed by Shutdown when the API ran
	}
}

func wrapErr(component string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", component, err)
}
