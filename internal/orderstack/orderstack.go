// Package orderstack runs the order example as one system: the orchestrator node and the four
// example services (order, inventory, payment, shipping), each service on its own database with
// its own outbox relay. "sagaflow dev --example order" runs it on SQLite files; the end-to-end
// tests run it on PostgreSQL, with the orchestrator in this process or in another one.
package orderstack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/engine"
	order "github.com/sagaflow/sagaflow/examples/order"
	"github.com/sagaflow/sagaflow/examples/order/driver"
	"github.com/sagaflow/sagaflow/examples/order/inventory"
	"github.com/sagaflow/sagaflow/examples/order/orders"
	"github.com/sagaflow/sagaflow/examples/order/payment"
	"github.com/sagaflow/sagaflow/examples/order/shipping"
	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/server"
	"github.com/sagaflow/sagaflow/participant"
	"github.com/sagaflow/sagaflow/saga"
)

// DB is one database of the stack: its handle and, on PostgreSQL, its DSN for LISTEN/NOTIFY.
type DB struct {
	DB        *sqlx.DB
	ListenDSN string
}

// Config configures a stack.
type Config struct {
	// NATS is the bus connection. Required.
	NATS *nats.Conn
	// Orchestrator is the orchestrator's database. Required.
	Orchestrator DB
	// Services holds the database of each service, keyed by service name (order.Services).
	// A service without a database is not run here (it runs elsewhere, or is "down").
	Services map[string]DB
	// RunOrchestrator runs the orchestrator node (engine, relay, API) in this stack; false when it
	// runs in another process and this stack only starts sagas and runs services.
	RunOrchestrator bool
	// HTTPAddr is the API's address when RunOrchestrator; empty: no API.
	HTTPAddr string
	// Definition is the saga definition; nil: the example's order-fulfilment.yaml.
	Definition *saga.Definition
	// Stock is each SKU's initial stock level (seeded once). Default 1,000,000.
	Stock int64
	// Inventory, Payment, Shipping and Orders carry each service's failure injection.
	Orders    orders.Options
	Inventory inventory.Options
	Payment   payment.Options
	Shipping  shipping.Options
	// Engine tunes the engine.
	Engine engine.Config
	// WrapPublisherFunc wraps every relay's publisher (tests: a bus that loses or duplicates).
	WrapPublisherFunc func(message.Publisher) message.Publisher
	// Streams configures the streams.
	Streams bus.StreamsConfig
	// TracerProviderFunc returns the tracer provider of a process: OrchestratorService for the
	// orchestrator node, else a service name (so each reports its own service.name); nil, or a nil
	// result: the global provider.
	TracerProviderFunc func(service string) trace.TracerProvider
	// MeterProvider receives every node's metrics; nil: the global provider.
	MeterProvider metric.MeterProvider
	// MetricsHandler, when set, is served at /metrics beside the API.
	MetricsHandler http.Handler
	// Logger receives the logs; nil discards them.
	Logger *slog.Logger
}

// OrchestratorService is the service name of the orchestrator node (TracerProviderFunc).
const OrchestratorService = "sagaflow"

// Stack is the order system, ready to Run.
type Stack struct {
	cfg      Config
	registry *definitions.Registry
	node     *server.Node
	services []*server.ParticipantNode
}

// New migrates every database, seeds the stock and builds the nodes.
func New(ctx context.Context, cfg Config) (*Stack, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Stock == 0 {
		cfg.Stock = 1_000_000
	}
	if cfg.Definition == nil {
		def, err := order.LoadDefinition()
		if err != nil {
			return nil, err
		}
		cfg.Definition = def
	}
	if cfg.NATS == nil || cfg.Orchestrator.DB == nil {
		return nil, errors.New("orderstack: NATS and Orchestrator.DB are required")
	}
	s := &Stack{cfg: cfg, registry: definitions.NewRegistry()}
	if err := s.registry.Register(cfg.Definition); err != nil {
		return nil, err
	}
	if err := engine.Migrate(ctx, cfg.Orchestrator.DB); err != nil {
		return nil, fmt.Errorf("migrate orchestrator database: %w", err)
	}
	node, err := server.New(ctx, server.Config{
		DB: cfg.Orchestrator.DB, ListenDSN: cfg.Orchestrator.ListenDSN, NATS: cfg.NATS, Definitions: s.registry,
		Orchestrator: cfg.RunOrchestrator, Relay: cfg.RunOrchestrator, HTTPAddr: cfg.HTTPAddr, Streams: cfg.Streams,
		Engine: cfg.Engine, WrapPublisherFunc: cfg.WrapPublisherFunc, Logger: cfg.Logger,
		TracerProvider: s.tracerProvider(OrchestratorService), MeterProvider: cfg.MeterProvider, MetricsHandler: cfg.MetricsHandler,
	})
	if err != nil {
		return nil, err
	}
	s.node = node
	for _, name := range order.Services {
		db, ok := cfg.Services[name]
		if !ok {
			continue
		}
		register, migrate := s.service(name)
		if err := participant.Migrate(ctx, db.DB); err != nil {
			return nil, fmt.Errorf("migrate %s database: %w", name, err)
		}
		if err := migrate(ctx, db.DB); err != nil {
			return nil, fmt.Errorf("migrate %s database: %w", name, err)
		}
		if name == order.ServiceInventory {
			if err := inventory.SeedStock(ctx, db.DB, cfg.Stock, order.SKUs()...); err != nil {
				return nil, fmt.Errorf("seed stock: %w", err)
			}
		}
		pn, err := server.NewParticipant(server.ParticipantConfig{
			Participant: participant.Config{Service: name}, DB: db.DB, ListenDSN: db.ListenDSN, NATS: cfg.NATS,
			RegisterFunc: register, WrapPublisherFunc: cfg.WrapPublisherFunc, Logger: cfg.Logger,
			TracerProvider: s.tracerProvider(name), MeterProvider: cfg.MeterProvider,
		})
		if err != nil {
			return nil, err
		}
		s.services = append(s.services, pn)
	}
	return s, nil
}

func (s *Stack) tracerProvider(service string) trace.TracerProvider {
	if s.cfg.TracerProviderFunc == nil {
		return nil
	}
	return s.cfg.TracerProviderFunc(service)
}

func (s *Stack) service(name string) (func(*participant.Participant) error, func(context.Context, *sqlx.DB) error) {
	switch name {
	case order.ServiceOrder:
		return func(p *participant.Participant) error { orders.Register(p, s.cfg.Orders); return nil }, orders.Migrate
	case order.ServiceInventory:
		return func(p *participant.Participant) error { inventory.Register(p, s.cfg.Inventory); return nil }, inventory.Migrate
	case order.ServicePayment:
		return func(p *participant.Participant) error { payment.Register(p, s.cfg.Payment); return nil }, payment.Migrate
	default:
		return func(p *participant.Participant) error { shipping.Register(p, s.cfg.Shipping); return nil }, shipping.Migrate
	}
}

// Engine is the orchestrator's Go client (it starts and reads sagas through the database, whether
// or not this stack runs the orchestrator).
func (s *Stack) Engine() *engine.Engine { return s.node.Engine() }

// Addr is the API's address, or "".
func (s *Stack) Addr() string { return s.node.Addr() }

// Run runs every node of the stack until ctx is done or one fails.
func (s *Stack) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.node.Run(gctx) })
	for _, pn := range s.services {
		g.Go(func() error { return pn.Run(gctx) })
	}
	return g.Wait()
}

// Starter adapts the engine to the driver: orders start order-fulfilment sagas keyed by order id
// (the business key is also the idempotency key, so a retried start starts nothing new).
func (s *Stack) Starter() driver.Starter { return starter{e: s.Engine(), def: s.cfg.Definition.Name} }

// DriverDBs returns the four service databases for the driver's invariant checks.
func (s *Stack) DriverDBs() driver.DBs {
	return driver.DBs{
		Orders:    s.cfg.Services[order.ServiceOrder].DB,
		Inventory: s.cfg.Services[order.ServiceInventory].DB,
		Payment:   s.cfg.Services[order.ServicePayment].DB,
		Shipping:  s.cfg.Services[order.ServiceShipping].DB,
	}
}

type starter struct {
	e   *engine.Engine
	def string
}

func (st starter) Start(ctx context.Context, key string, input json.RawMessage) (string, error) {
	return st.e.Start(ctx, st.def, key, input, engine.StartOptions{IdempotencyKey: key, Actor: "driver"})
}

func (st starter) Wait(ctx context.Context, id string) (string, error) {
	in, err := st.e.Wait(ctx, id)
	if err != nil {
		return "", err
	}
	return string(in.Status), nil
}
