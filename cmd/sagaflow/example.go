package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/engine"
	order "github.com/sagaflow/sagaflow/examples/order"
	"github.com/sagaflow/sagaflow/examples/order/driver"
	"github.com/sagaflow/sagaflow/examples/order/services"
	"github.com/sagaflow/sagaflow/internal/server"
	"github.com/sagaflow/sagaflow/participant"
)

// orchestratorService is the service name of the orchestrator node (traces, metrics).
const orchestratorService = "sagaflow"

// exampleDB is one database of the order example: its handle and, on PostgreSQL, its DSN for
// LISTEN/NOTIFY (empty on SQLite).
type exampleDB struct {
	db        *sqlx.DB
	listenDSN string
}

// orderExample configures the order example run in this process ("dev --example order",
// "bench saga"): the orchestrator node and the four services of the example's registry, each on
// its own database, assembled by internal/server.
type orderExample struct {
	nats         *nats.Conn
	orchestrator exampleDB
	// services holds the database of each of order.Services.
	services map[string]exampleDB
	opts     services.Options
	httpAddr string
	// traceURL is the console's trace link template (server.Config.TraceURL).
	traceURL string
	// tracerProvider returns the tracer provider of a service (orchestratorService for the
	// orchestrator node); nil: the global provider.
	tracerProvider func(service string) trace.TracerProvider
	meterProvider  metric.MeterProvider
	metricsHandler http.Handler
	logger         *slog.Logger
}

// newStack migrates every database, seeds the stock and builds the stack.
func (x orderExample) newStack(ctx context.Context) (*server.Stack, error) {
	def, err := order.LoadDefinition()
	if err != nil {
		return nil, err
	}
	reg := definitions.NewRegistry()
	if err := reg.Register(def); err != nil {
		return nil, err
	}
	if err := engine.Migrate(ctx, x.orchestrator.db); err != nil {
		return nil, fmt.Errorf("migrate orchestrator database: %w", err)
	}
	cfg := server.StackConfig{Orchestrator: server.Config{
		DB: x.orchestrator.db, ListenDSN: x.orchestrator.listenDSN, NATS: x.nats, Definitions: reg,
		Orchestrator: true, Relay: true, HTTPAddr: x.httpAddr, TraceURL: x.traceURL,
		TracerProvider: x.tracer(orchestratorService), MeterProvider: x.meterProvider,
		MetricsHandler: x.metricsHandler, Logger: x.logger,
	}}
	for _, name := range order.Services {
		db := x.services[name]
		if err := services.Migrate(ctx, name, db.db, x.opts); err != nil {
			return nil, err
		}
		cfg.Participants = append(cfg.Participants, server.ParticipantConfig{
			Participant: participant.Config{Service: name}, DB: db.db, ListenDSN: db.listenDSN, NATS: x.nats,
			RegisterFunc:   func(p *participant.Participant) error { return services.Register(name, p, x.opts) },
			TracerProvider: x.tracer(name), MeterProvider: x.meterProvider, Logger: x.logger,
		})
	}
	return server.NewStack(ctx, cfg)
}

func (x orderExample) tracer(service string) trace.TracerProvider {
	if x.tracerProvider == nil {
		return nil
	}
	return x.tracerProvider(service)
}

// driverConfig is the driver's configuration against the stack: its starter and the four
// services' databases for the invariant checks.
func (x orderExample) driverConfig(stack *server.Stack) driver.Config {
	return driver.Config{
		Starter: driver.EngineStarter(stack.Node().Engine(), order.Definition),
		DBs: driver.DBs{
			Orders:    x.services[order.ServiceOrder].db,
			Inventory: x.services[order.ServiceInventory].db,
			Payment:   x.services[order.ServicePayment].db,
			Shipping:  x.services[order.ServiceShipping].db,
		},
	}
}
