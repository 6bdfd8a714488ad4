package participant

import (
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/outbox"
)

// Config configures a Participant. A zero field means its default.
type Config struct {
	// Service is the participant's service name as definitions spell it ([a-z0-9-]); it receives
	// the commands on saga.cmd.<Service>.>. Required.
	Service string
	// Outbox writes the replies inside the handler's transaction. Default: outbox.NewWriter(db, nil).
	Outbox *outbox.Writer
	// Relay tunes the outbox relay Run runs beside the consumer, publishing the replies (and any
	// domain events the handlers write to the outbox) from the service's database. Default: the
	// relay's defaults, named after Service, with this Config's Logger and providers. What this
	// process commits it publishes from memory at once; see outbox.RelayConfig.ListenDSN and
	// outbox.WriterConfig.Notify for commits of other processes.
	Relay *outbox.RelayConfig
	// DisableRelay runs no relay in this participant: another process relays the service's outbox
	// ("sagaflow relay --db ...", or an outbox.Relay of your own).
	DisableRelay bool
	// Namespace, when set, is the installation's namespace on a NATS account shared with other
	// installations: the participant consumes ns.saga.cmd.<Service>.> from the namespace's command
	// stream with the durable <Namespace>-sagaflow-participant-<Service>, replies only under
	// <Namespace>.saga.reply., and creates the streams of the namespace (README, "The message
	// contract"). [a-z0-9-], 1..32; empty (default): no prefix. It overrides Streams.Namespace.
	Namespace string
	// Streams configures Sagaflow's JetStream streams, which Run creates or updates at start
	// (outbox.EnsureStreams). Default: one replica, the default duplicate window.
	Streams *outbox.StreamsConfig
	// DisableStreamSetup makes Run leave the streams alone (they must exist: created by a
	// deployment job or another process) — for credentials that may not manage streams.
	DisableStreamSetup bool
	// Logger receives the participant's logs. Default: discard.
	Logger *slog.Logger
	// Batch is how many commands are handled in one database transaction and how many are taken
	// from the bus at once. Default 32.
	Batch int
	// MaxDeliver bounds the deliveries of a command whose handler keeps returning errors; the last
	// one goes to the dead-letter stream. Default 10.
	MaxDeliver int
	// AckWait is how long JetStream waits for an answer before redelivering. Default 30s.
	AckWait time.Duration
	// NakDelay is the redelivery delay after a transient error on a command's first delivery;
	// it doubles with each further delivery, up to AckWait. Default 1s (with the default
	// MaxDeliver and AckWait, the last delivery comes about 2.5 minutes after the first).
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
	// BarrierRetention is how long the barrier keeps a saga's rows after its last one was written
	// here; Run prunes older ones every minute, in batches. Default DefaultBarrierRetention (30
	// days); negative keeps them forever. It must outlast every retry of a step, a hanging
	// command, and an operator's redrive of a failed saga (see prune.go); at least 1h.
	BarrierRetention time.Duration
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
	if c.BarrierRetention == 0 {
		c.BarrierRetention = DefaultBarrierRetention
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	if c.Relay != nil && c.DisableRelay {
		errs = append(errs, errors.New("Relay: set, but DisableRelay is true"))
	}
	if !serviceRE.MatchString(c.Service) {
		errs = append(errs, fmt.Errorf("Service %q: must match %s", c.Service, serviceRE))
	}
	if err := bus.Namespace(c.Namespace).Validate(); err != nil {
		errs = append(errs, fmt.Errorf("Namespace: %w", err))
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
	if c.BarrierRetention >= 0 && c.BarrierRetention < time.Hour {
		errs = append(errs, fmt.Errorf("BarrierRetention %s: must be at least 1h (or negative: keep forever)", c.BarrierRetention))
	}
	return errors.Join(errs...)
}
