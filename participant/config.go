package participant

import (
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/sagaflow/sagaflow/outbox"
)

// Config configures a Participant. A zero field means its default.
type Config struct {
	// Service is the participant's service name as definitions spell it ([a-z0-9-]); it receives
	// the commands on saga.cmd.<Service>.>. Required.
	Service string
	// DB is the service's own database (PostgreSQL or SQLite); handlers run in its transactions,
	// the barrier and the outbox live in it. Required; see Migrate.
	DB *sqlx.DB
	// JetStream is the bus the commands come from. Required. The SAGA_COMMANDS and SAGA_DLQ
	// streams must exist (bus.EnsureStreams).
	JetStream jetstream.JetStream
	// Outbox writes the replies inside the handler's transaction. Default: an outbox.Writer for
	// DB's dialect. Something must relay the outbox to JetStream (outbox.Relay).
	Outbox *outbox.Writer
	// Logger receives the participant's logs. Default: discard.
	Logger *slog.Logger
	// Batch is how many commands are handled in one database transaction (each under its own
	// savepoint) and how many are taken from the bus at once. Default 32.
	Batch int
	// MaxDeliver bounds the deliveries of a command whose handler keeps returning errors; the last
	// one goes to the dead-letter stream. Default 10.
	MaxDeliver int
	// AckWait is how long JetStream waits for an answer before redelivering. Default 30s.
	AckWait time.Duration
	// NakDelay is the redelivery delay after a transient error. Default 1s.
	NakDelay time.Duration
	// ShutdownTimeout bounds how long Run waits for in-flight commands when its context ends.
	// Default 30s.
	ShutdownTimeout time.Duration
	// TracerProvider records a consumer span per command, the child of the orchestrator's step
	// span (through the command's traceparent); the handler runs under it, so its own spans nest
	// below, and the reply carries it. Default: the global provider (otel.GetTracerProvider).
	TracerProvider trace.TracerProvider
	// MeterProvider receives the participant's metrics (sagaflow.dead_lettered). Default: the
	// global provider (otel.GetMeterProvider).
	MeterProvider metric.MeterProvider
	// OnCommit, when set, is called after a transaction that wrote replies to the outbox has
	// committed (dev mode passes the relay's Wake, so replies leave at once).
	OnCommit func()
}

var serviceRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$`)

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Batch == 0 {
		c.Batch = 32
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = 10
	}
	if c.AckWait == 0 {
		c.AckWait = 30 * time.Second
	}
	if c.NakDelay == 0 {
		c.NakDelay = time.Second
	}
	if c.TracerProvider == nil {
		c.TracerProvider = otel.GetTracerProvider()
	}
	if c.MeterProvider == nil {
		c.MeterProvider = otel.GetMeterProvider()
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	if !serviceRE.MatchString(c.Service) {
		errs = append(errs, fmt.Errorf("Service %q: must match %s", c.Service, serviceRE))
	}
	if c.DB == nil {
		errs = append(errs, errors.New("DB: required"))
	}
	if c.JetStream == nil {
		errs = append(errs, errors.New("JetStream: required"))
	}
	if c.Batch < 1 {
		errs = append(errs, fmt.Errorf("Batch %d: must be >= 1", c.Batch))
	}
	if c.MaxDeliver < 1 {
		errs = append(errs, fmt.Errorf("MaxDeliver %d: must be >= 1", c.MaxDeliver))
	}
	if c.AckWait < 0 || c.NakDelay < 0 || c.ShutdownTimeout < 0 {
		errs = append(errs, errors.New("AckWait, NakDelay, ShutdownTimeout: must not be negative"))
	}
	return errors.Join(errs...)
}
