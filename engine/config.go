package engine

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/outbox"
)

// Config configures an Engine. DB and Definitions are required; JetStream is required by Run
// only (an Engine that only starts, reads, cancels and redrives sagas does not consume). Zero
// fields take the defaults documented on them.
type Config struct {
	// DB is the orchestrator's database (PostgreSQL or SQLite), migrated with Migrate.
	DB *sqlx.DB
	// JetStream is the bus Run consumes replies and trigger events from. The streams must exist
	// (outbox.EnsureStreams).
	JetStream jetstream.JetStream
	// Definitions holds every definition the engine runs, each version a running instance may
	// still be on.
	Definitions *definitions.Registry
	// Outbox writes outgoing commands inside the engine's transactions; nil means
	// outbox.NewWriter with the DB's dialect and default settings.
	Outbox *outbox.Writer
	// Logger receives the engine's logs; nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Rand returns a random number in [0, 1) for retry jitter; nil means math/rand/v2.Float64.
	Rand func() float64
	// ReplyBatch is the most replies applied in one transaction, and the number of replies the
	// consumer holds unacknowledged at once. Default 64.
	ReplyBatch int
	// Namespace, when set, is the installation's namespace on a NATS account shared with other
	// installations: the reply consumer's stream, filter and durable name, the trigger consumers,
	// the command and reply subjects the engine writes, and the dead-letter subjects are all
	// prefixed with it (README, "The message contract"). [a-z0-9-], 1..32; empty (default): no
	// prefix. The streams must have been created in the same namespace.
	Namespace string
	// ReplyConsumer is the name of the durable JetStream consumer of replies, shared by every
	// replica, and of the inbox that deduplicates them. Default "sagaflow-orchestrator".
	ReplyConsumer string
	// MaxDeliver is how often a reply or trigger event is delivered before it goes to the
	// dead-letter stream. Default 10.
	MaxDeliver int
	// NakDelay is how long a reply or trigger event whose handling failed (the database did not
	// answer, say) waits before its next delivery. Default 1s, so the MaxDeliver deliveries span
	// an outage of seconds instead of being spent in a moment and dead-lettering valid messages.
	NakDelay time.Duration
	// TimerInterval is the timers' fallback poll: how long they sleep at most when no nearer
	// deadline is known. Default 1s.
	TimerInterval time.Duration
	// TimerBatch is the most due instances the timers claim in one transaction. Default 128.
	TimerBatch int
	// ListenDSN, on PostgreSQL, is a DSN the timers LISTEN on (through lib/pq's listener) to be
	// woken when another replica writes a near deadline; when set, transactions that write a
	// deadline due within TimerInterval send a NOTIFY. Empty: in-process wake-ups and the poll only.
	ListenDSN string
	// Relay, when set, is the relay of DB's outbox running in this process: after each commit the
	// engine hands it the commands it wrote (outbox.Relay.CommittedAll), which it publishes at once
	// from memory; their rows stay the durable copy. Give that relay a RelayConfig.ClaimDelay
	// (the orchestrator node uses 2s) so it does not also claim rows still being published.
	Relay *outbox.Relay
	// OnCommit, when set, is called after every committed transaction of the engine that wrote
	// outbox rows (for a relay in this process that does not publish from memory: its Wake).
	OnCommit func()
	// TracerProvider records each saga's trace (see TraceIDGenerator); nil means the global
	// provider (otel.GetTracerProvider).
	TracerProvider trace.TracerProvider
	// MeterProvider receives the engine's metrics (sagaflow.sagas.*, sagaflow.step.*); nil means
	// the global provider (otel.GetMeterProvider).
	MeterProvider metric.MeterProvider
	// ShutdownTimeout bounds how long Run waits for in-flight replies after ctx is done. Default 30s.
	ShutdownTimeout time.Duration
	// MaxInputBytes bounds the input of a start; Start refuses a larger one with a *LimitError.
	// Default DefaultMaxInputBytes (512 KiB). The commands carry the input and the steps' outputs,
	// and must fit in the outbox's MaxPayload (NATS's max_payload).
	MaxInputBytes int
	// MaxHeaderBytes bounds the header block of a command; Start refuses a saga whose first command
	// would exceed it with a *LimitError. Default and maximum NATSMaxHeaderBytes (64 KiB), what
	// JetStream stores.
	MaxHeaderBytes int
	// Retention deletes completed and compensated sagas, with their history, this long after they
	// finished (failed sagas and sagas in the operator's queue are kept). Zero keeps every saga
	// forever: a library never deletes data it was not asked to (sagaflow serve sets 720h). When
	// set it must be at least InboxRetention. See retention.go for what is safe to delete.
	Retention time.Duration
	// RetentionBatch is the most sagas deleted in one transaction. Default 500.
	RetentionBatch int
	// RetentionInterval is the pause between retention passes. Default 1m.
	RetentionInterval time.Duration
	// InboxRetention is how long the inbox keeps the id of an applied reply, to drop duplicates.
	// Default DefaultInboxRetention (24h); at least MaxDeliver × 30s (AckWait) + 2m (the replies
	// stream's duplicate window), the latest a duplicate can be delivered.
	InboxRetention time.Duration
}

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Rand == nil {
		c.Rand = rand.Float64
	}
	if c.ReplyBatch == 0 {
		c.ReplyBatch = 64
	}
	if c.ReplyConsumer == "" {
		c.ReplyConsumer = "sagaflow-orchestrator"
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = 10
	}
	if c.NakDelay == 0 {
		c.NakDelay = time.Second
	}
	if c.TimerInterval == 0 {
		c.TimerInterval = time.Second
	}
	if c.TimerBatch == 0 {
		c.TimerBatch = 128
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
	if c.MaxInputBytes == 0 {
		c.MaxInputBytes = DefaultMaxInputBytes
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = NATSMaxHeaderBytes
	}
	if c.RetentionBatch == 0 {
		c.RetentionBatch = 500
	}
	if c.RetentionInterval == 0 {
		c.RetentionInterval = time.Minute
	}
	if c.InboxRetention == 0 {
		c.InboxRetention = DefaultInboxRetention
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	if c.DB == nil {
		errs = append(errs, errors.New("engine config: DB is required"))
	}
	if c.Definitions == nil {
		errs = append(errs, errors.New("engine config: Definitions is required"))
	}
	if err := bus.Namespace(c.Namespace).Validate(); err != nil {
		errs = append(errs, fmt.Errorf("engine config: Namespace: %w", err))
	}
	if c.ReplyBatch < 1 {
		errs = append(errs, errors.New("engine config: ReplyBatch must be >= 1"))
	}
	if c.MaxDeliver < 1 {
		errs = append(errs, errors.New("engine config: MaxDeliver must be >= 1"))
	}
	if c.NakDelay < 0 {
		errs = append(errs, errors.New("engine config: NakDelay must not be negative"))
	}
	if c.TimerInterval < 0 {
		errs = append(errs, errors.New("engine config: TimerInterval must not be negative"))
	}
	if c.TimerBatch < 1 {
		errs = append(errs, errors.New("engine config: TimerBatch must be >= 1"))
	}
	if c.MaxInputBytes < 1 {
		errs = append(errs, errors.New("engine config: MaxInputBytes must be >= 1"))
	}
	if c.MaxHeaderBytes < 1 || c.MaxHeaderBytes > NATSMaxHeaderBytes {
		errs = append(errs, fmt.Errorf("engine config: MaxHeaderBytes must be 1..%d (NATS's header limit)", NATSMaxHeaderBytes))
	}
	if c.RetentionBatch < 1 {
		errs = append(errs, errors.New("engine config: RetentionBatch must be >= 1"))
	}
	if c.RetentionInterval < 0 {
		errs = append(errs, errors.New("engine config: RetentionInterval must not be negative"))
	}
	if minInbox := minInboxRetention(c.MaxDeliver); c.InboxRetention < minInbox {
		errs = append(errs, fmt.Errorf("engine config: InboxRetention %s must be at least %s (MaxDeliver × AckWait + the duplicate window)", c.InboxRetention, minInbox))
	}
	if c.Retention < 0 {
		errs = append(errs, errors.New("engine config: Retention must not be negative (0 keeps sagas forever)"))
	} else if c.Retention > 0 && c.Retention < c.InboxRetention {
		errs = append(errs, fmt.Errorf("engine config: Retention %s must be 0 (forever) or at least InboxRetention %s", c.Retention, c.InboxRetention))
	}
	return errors.Join(errs...)
}
