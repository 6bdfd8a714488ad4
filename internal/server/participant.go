package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/sagaflow/sagaflow/outbox"
	"github.com/sagaflow/sagaflow/participant"
)

// ParticipantConfig configures a participant node: one service's participant and the relay of
// that service's own database.
type ParticipantConfig struct {
	// Participant configures the participant; its Logger and Relay are set by the node from the
	// fields below. Service is required.
	Participant participant.Config
	// DB is the service's database, already migrated (participant.Migrate and the service's own).
	DB *sqlx.DB
	// ListenDSN is DB's PostgreSQL DSN for LISTEN/NOTIFY; empty on SQLite.
	ListenDSN string
	// NATS is the connection to the bus.
	NATS *nats.Conn
	// RegisterFunc registers the service's handlers.
	RegisterFunc func(*participant.Participant) error
	// RelayConfig tunes the relay.
	RelayConfig outbox.RelayConfig
	// WrapPublisherFunc, when set, wraps the relay's publisher (tests: a lossy or duplicating bus).
	WrapPublisherFunc func(message.Publisher) message.Publisher
	// TracerProvider and MeterProvider are the participant's and the relay's unless Participant or
	// RelayConfig name their own; nil: the global providers.
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	// Logger receives the logs; nil discards them.
	Logger *slog.Logger
}

// ParticipantNode is a running (or ready to run) participant node.
type ParticipantNode struct {
	p *participant.Participant
}

// NewParticipant builds a participant node: the participant, which runs the relay of its
// database itself.
func NewParticipant(cfg ParticipantConfig) (*ParticipantNode, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.NATS == nil || cfg.DB == nil || cfg.RegisterFunc == nil {
		return nil, errors.New("participant node: NATS, DB and RegisterFunc are required")
	}
	js, err := jetstream.New(cfg.NATS)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	logger := cfg.Logger.With("service", cfg.Participant.Service)
	rcfg := cfg.RelayConfig
	rcfg.TracerProvider = cmp.Or(rcfg.TracerProvider, cfg.TracerProvider)
	rcfg.MeterProvider = cmp.Or(rcfg.MeterProvider, cfg.MeterProvider)
	rcfg.ListenDSN = cfg.ListenDSN
	rcfg.Logger = logger.With("component", "relay")
	rcfg.PublisherDecorator = decorator(cfg.WrapPublisherFunc)
	pcfg := cfg.Participant
	pcfg.Logger, pcfg.Relay = logger.With("component", "participant"), &rcfg
	pcfg.TracerProvider = cmp.Or(pcfg.TracerProvider, cfg.TracerProvider)
	pcfg.MeterProvider = cmp.Or(pcfg.MeterProvider, cfg.MeterProvider)
	p, err := participant.New(cfg.DB, js, &pcfg)
	if err != nil {
		return nil, fmt.Errorf("participant %s: %w", pcfg.Service, err)
	}
	if err := cfg.RegisterFunc(p); err != nil {
		return nil, fmt.Errorf("participant %s: register handlers: %w", pcfg.Service, err)
	}
	return &ParticipantNode{p: p}, nil
}

// Run runs the participant (and its relay) until ctx is done.
func (n *ParticipantNode) Run(ctx context.Context) error { return n.p.Run(ctx) }
