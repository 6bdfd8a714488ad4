package participant

import (
	"cmp"
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/migrate"
	"github.com/sagaflow/sagaflow/internal/protocol"
	"github.com/sagaflow/sagaflow/internal/telemetry"
	"github.com/sagaflow/sagaflow/outbox"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migrate creates the participant's tables in the service's database: the barrier
// (sagaflow_barrier) and the outbox's tables (outbox.Migrate). It is idempotent and safe to run
// from several replicas at once.
func Migrate(ctx context.Context, db *sqlx.DB) error {
	if err := outbox.Migrate(ctx, db); err != nil {
		return err
	}
	if _, err := migrate.Apply(ctx, db, "participant", migrations); err != nil {
		return err
	}
	return nil
}

// CheckMigrations returns nil when every migration Migrate would apply (the outbox's and the
// barrier's) is applied to db, and otherwise an error matching outbox.ErrMigrationsPending naming
// the pending files. It reads only, for a service running as a role without DDL rights.
func CheckMigrations(ctx context.Context, db *sqlx.DB) error {
	return errors.Join(outbox.CheckMigrations(ctx, db), migrate.Check(ctx, db, map[string]fs.FS{"participant": migrations}))
}

// Participant receives a service's saga commands from JetStream and runs them through the
// registered handlers, each inside a transaction of the service's database guarded by the barrier.
// Register every handler before Run. Its methods are safe for concurrent use.
type Participant struct {
	cfg    Config
	db     *sqlx.DB
	js     jetstream.JetStream
	outbox *outbox.Writer
	relay  *outbox.Relay // nil with Config.DisableRelay
	log    *slog.Logger
	tracer trace.Tracer

	mu         sync.RWMutex
	forward    map[string]Handler
	compensate map[string]Handler

	running  atomic.Bool
	commands *bus.Consumer // the service's commands; Ready when Run consumes

	lifeMu sync.Mutex
	cancel context.CancelFunc // set by Start
	done   chan error         // Run's result, for Stop
}

// New returns the participant of cfg.Service (cfg is required) over db, the service's own
// database (PostgreSQL through lib/pq or SQLite through modernc.org/sqlite, detected from db's
// driver; see Migrate), and js, the bus its commands come from. It reports every configuration
// problem at once, each naming its field.
func New(db *sqlx.DB, js jetstream.JetStream, cfg *Config) (*Participant, error) {
	var errs []error
	if db == nil {
		errs = append(errs, errors.New("db: required"))
	}
	if js == nil {
		errs = append(errs, errors.New("js: required"))
	}
	if cfg == nil {
		errs = append(errs, errors.New("cfg: required (Service at least)"))
	} else {
		errs = append(errs, cfg.withDefaults().validate())
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("participant config: %w", err)
	}
	c := cfg.withDefaults()
	w := c.Outbox
	if w == nil {
		w = outbox.NewWriter(db, nil)
	}
	p := &Participant{
		cfg:        c,
		db:         db,
		js:         js,
		outbox:     w,
		log:        c.Logger.With("component", "participant", "service", c.Service),
		tracer:     c.TracerProvider.Tracer("github.com/sagaflow/sagaflow/participant"),
		forward:    map[string]Handler{},
		compensate: map[string]Handler{},
	}
	ns := bus.Namespace(c.Namespace)
	cons, err := bus.NewConsumer(js, bus.ConsumerConfig{
		Stream:          ns.Stream(bus.StreamCommands),
		Durable:         ns.Durable(Durable(c.Service)),
		FilterSubjects:  []string{ns.Subject(protocol.ServiceCommands(c.Service))},
		Namespace:       ns,
		Batch:           c.Batch,
		AckWait:         c.AckWait,
		MaxDeliver:      c.MaxDeliver,
		ShutdownTimeout: c.ShutdownTimeout,
		Logger:          p.log,
		MeterProvider:   c.MeterProvider,
		LogAttrs:        protocol.LogAttrs,
	})
	if err != nil {
		return nil, fmt.Errorf("participant config: %w", err)
	}
	p.commands = cons
	if !c.DisableRelay {
		var rc outbox.RelayConfig
		if c.Relay != nil {
			rc = *c.Relay
		}
		rc.Name = cmp.Or(rc.Name, c.Service)
		rc.ClaimDelay = cmp.Or(rc.ClaimDelay, DefaultClaimDelay)
		rc.Logger = cmp.Or(rc.Logger, c.Logger)
		rc.TracerProvider = cmp.Or(rc.TracerProvider, c.TracerProvider)
		rc.MeterProvider = cmp.Or(rc.MeterProvider, c.MeterProvider)
		p.relay = outbox.NewRelay(db, js, &rc)
	}
	return p, nil
}

// DefaultClaimDelay is the participant's relay's RelayConfig.ClaimDelay unless Config.Relay sets
// one: replies are published from memory right after their transaction commits, and the relay
// claims only rows that path missed and that are older than this.
const DefaultClaimDelay = 2 * time.Second

// Relay returns the outbox relay this participant runs, or nil with Config.DisableRelay.
func (p *Participant) Relay() *outbox.Relay { return p.relay }

// committed is called after a transaction that wrote replies has committed: the participant's own
// relay publishes them at once from memory; their rows are the fallback if that fails.
func (p *Participant) committed(sent replies) {
	if p.relay == nil {
		return
	}
	for subject, msgs := range sent {
		p.relay.Committed(subject, msgs...)
	}
}

// Handle registers h for the forward command named command (the definition's step "command").
// It panics on an empty name, a nil handler or a second registration: those are programming errors.
func (p *Participant) Handle(command string, h Handler) { p.register(p.forward, command, h) }

// Compensate registers h for the compensation command named command (the definition's step
// "compensation"). h runs only when the forward action succeeded here; a compensation for a
// forward that never ran is answered success without calling h. It panics like Handle.
func (p *Participant) Compensate(command string, h Handler) { p.register(p.compensate, command, h) }

func (p *Participant) register(m map[string]Handler, command string, h Handler) {
	if command == "" || strings.ContainsAny(command, ".*> ") || h == nil {
		panic(fmt.Sprintf("participant: register %q: want a command name without . * > or spaces and a non-nil handler", command))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, dup := m[command]; dup {
		panic(fmt.Sprintf("participant: command %q registered twice", command))
	}
	m[command] = h
}

func (p *Participant) handler(c protocol.Command) Handler {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if c.Action == protocol.ActionCompensate {
		return p.compensate[c.Name]
	}
	return p.forward[c.Name]
}

// Commands returns the names of the registered forward commands and compensations, sorted.
func (p *Participant) Commands() (forward, compensations []string) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return slices.Sorted(maps.Keys(p.forward)), slices.Sorted(maps.Keys(p.compensate))
}

// Durable returns the name of the durable JetStream consumer the replicas of service share (without
// a namespace; in namespace ns it is ns + "-" + Durable(service)).
func Durable(service string) string { return "sagaflow-participant-" + service }

// Run consumes the service's commands until ctx ends, then finishes the commands in flight (within
// Config.ShutdownTimeout) and returns nil. All replicas of a service share one durable consumer
// on SAGA_COMMANDS filtered to saga.cmd.<service>.>, so each command goes to one of them.
// Commands that cannot be parsed, whose reply subject is not under saga.reply., that name no
// registered handler, or that a handler refused with Reject go to the dead-letter stream at once
// with the reason; commands whose handler keeps failing go there after Config.MaxDeliver
// deliveries.
//
// Before consuming, Run creates or updates Sagaflow's streams (unless Config.DisableStreamSetup)
// and starts the service's outbox relay (unless Config.DisableRelay), which it stops after the
// last command in flight has committed. Run may be called once.
func (p *Participant) Run(ctx context.Context) error {
	if !p.running.CompareAndSwap(false, true) {
		return errors.New("participant: Run called twice")
	}
	cfg := p.cfg
	ns := bus.Namespace(cfg.Namespace)
	if !cfg.DisableStreamSetup {
		streams := outbox.StreamsConfig{}
		if cfg.Streams != nil {
			streams = *cfg.Streams
		}
		streams.Namespace = cfg.Namespace
		if err := outbox.EnsureStreams(ctx, p.js, &streams); err != nil {
			return fmt.Errorf("participant %s: %w", cfg.Service, err)
		}
	}
	bus.RememberNamespace(p.js, ns)
	// The relay runs until the consumer has stopped, so the replies of the last commands leave too.
	relayCtx, stopRelay := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRelay()
	relayDone := make(chan error, 1)
	if p.relay != nil {
		go func() { relayDone <- p.relay.Run(relayCtx) }()
	} else {
		relayDone <- nil
	}
	pruneCtx, stopPrune := context.WithCancel(ctx)
	defer stopPrune()
	pruneDone := make(chan struct{})
	go func() {
		defer close(pruneDone)
		p.pruneBarrier(pruneCtx)
	}()
	p.log.InfoContext(ctx, "participant started", "subject", ns.Subject(protocol.ServiceCommands(cfg.Service)), "batch", cfg.Batch)
	err := p.consume(ctx, relayDone)
	stopPrune()
	<-pruneDone
	stopRelay()
	relayErr := <-relayDone
	p.log.InfoContext(ctx, "participant stopped")
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("participant %s: %w", cfg.Service, err)
	}
	if relayErr != nil {
		return fmt.Errorf("participant %s: relay: %w", cfg.Service, relayErr)
	}
	return nil
}

// consume consumes commands until ctx ends, or until the relay fails (then consuming stops and
// the relay's error is put back for Run). The batch in flight when it stops is finished (within
// Config.ShutdownTimeout) and settled.
func (p *Participant) consume(ctx context.Context, relayDone chan error) error {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watchDone := make(chan struct{})
	defer func() { <-watchDone }()
	go func() {
		defer close(watchDone)
		select {
		case err := <-relayDone:
			relayDone <- err // for Run
			if err != nil {
				p.log.ErrorContext(ctx, "relay failed; stopping the participant", "err", err)
			}
			cancel()
		case <-cctx.Done():
		}
	}()
	return p.commands.Run(cctx, p.handleCommands)
}

// handleCommands is the consumer's handler: it parses each command of the batch, handles those
// that are valid in one transaction (see process) and returns each one's verdict. A command that
// cannot be parsed, whose reply subject is not under saga.reply., that names no registered handler
// or that its handler refused with Reject is dead-lettered with the reason; one whose handler
// failed is delivered again after Config.NakDelay.
//
// Each command is processed under a consumer span, the child of the span its traceparent names
// (the orchestrator's step span); the handler runs under it and the reply carries it.
func (p *Participant) handleCommands(ctx context.Context, batch []bus.Delivery) []bus.Verdict {
	verdicts := make([]bus.Verdict, len(batch))
	jobs := make([]*job, 0, len(batch))
	for i, d := range batch {
		_, span := p.tracer.Start(telemetry.Extract(ctx, d.Headers), "process "+d.Subject,
			trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithAttributes(telemetry.ProcessAttributes(d.Subject, d.ID, Durable(p.cfg.Service), len(d.Payload))...))
		j, err := p.parse(span, d)
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
			span.End()
			verdicts[i] = bus.ToDeadLetter(err.Error())
			continue
		}
		j.at = i
		jobs = append(jobs, j)
	}
	if len(jobs) == 0 {
		return verdicts
	}
	results := p.process(ctx, jobs) // in jobs' order, which process sorted
	for k, j := range jobs {
		verdicts[j.at] = p.verdict(ctx, j, results[k])
		j.span.End()
	}
	return verdicts
}

// parse turns d into a job, or returns why it must be dead-lettered.
func (p *Participant) parse(span trace.Span, d bus.Delivery) (*job, error) {
	ns := bus.Namespace(p.cfg.Namespace)
	c, err := protocol.ParseCommand(strings.TrimPrefix(d.Subject, ns.Subject("")), &message.Message{UUID: d.ID, Metadata: d.Headers, Payload: d.Payload})
	if err != nil {
		return nil, err
	}
	span.SetAttributes(telemetry.SagaIDKey.String(c.SagaID), telemetry.DefinitionKey.String(c.Definition),
		telemetry.BusinessKeyKey.String(c.BusinessKey), telemetry.StepKey.String(c.Step), telemetry.AttemptKey.Int(c.Attempt),
		telemetry.ActionKey.String(string(c.Action)), telemetry.ServiceKey.String(c.Service), telemetry.CommandKey.String(c.Name))
	if c.Service != p.cfg.Service {
		return nil, fmt.Errorf("command for service %q received by service %q", c.Service, p.cfg.Service)
	}
	if err := checkReplyTo(ns, c.ReplyTo); err != nil {
		return nil, err
	}
	h := p.handler(c)
	if h == nil {
		return nil, fmt.Errorf("%w: %s %s of service %s", ErrUnknownCommand, c.Action, c.Name, c.Service)
	}
	return &job{cmd: c, headers: d.Headers, handler: h, span: span, delivery: d.Attempt}, nil
}

// verdict is the consumer's verdict on j, whose handling ended with err.
func (p *Participant) verdict(ctx context.Context, j *job, err error) bus.Verdict {
	switch {
	case err == nil:
		j.span.SetAttributes(telemetry.OutcomeKey.String(string(j.outcome)))
		return bus.Ack()
	case errors.Is(err, ErrRejected):
		j.span.SetStatus(codes.Error, err.Error())
		return bus.ToDeadLetter(err.Error())
	}
	j.span.SetStatus(codes.Error, err.Error())
	c := &j.cmd
	p.log.WarnContext(ctx, "command will be redelivered", "saga_id", c.SagaID, "definition", c.Definition, "step", c.Step,
		"trace_id", j.traceID(), "action", string(c.Action), "attempt", c.Attempt, "delivery", j.delivery, "err", err)
	return bus.Retry(p.cfg.NakDelay, err)
}

// Start runs the participant in the background (see Run) for services that cannot give it a
// goroutine of their own. It returns once the participant consumes commands, or with Run's error
// if it could not start, or ctx's error. Start after Start is a no-op.
func (p *Participant) Start(ctx context.Context) error {
	p.lifeMu.Lock()
	if p.cancel != nil {
		p.lifeMu.Unlock()
		return nil
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p.cancel, p.done = cancel, make(chan error, 1)
	done := p.done
	p.lifeMu.Unlock()
	go func() { done <- p.Run(runCtx) }()
	select {
	case <-p.commands.Ready():
		return nil
	case err := <-done:
		done <- err // keep it for Stop
		if err == nil {
			err = errors.New("participant stopped while starting")
		}
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stop stops a participant started with Start: it stops taking commands, waits for those in flight
// (within Config.ShutdownTimeout, or until ctx ends) and returns Run's error. Stop before Start,
// and Stop after Stop, are no-ops.
func (p *Participant) Stop(ctx context.Context) error {
	p.lifeMu.Lock()
	cancel, done := p.cancel, p.done
	p.lifeMu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	select {
	case err := <-done:
		done <- err
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// checkReplyTo accepts a reply subject under saga.reply. (in namespace ns) with one definition
// token: replies go only
// where the orchestrator listens, never to a subject the command's sender chose (EVENTS, another
// service's commands, a subject no stream takes).
func checkReplyTo(ns bus.Namespace, subject string) error {
	def, ok := strings.CutPrefix(subject, ns.Subject(protocol.ReplyPrefix))
	if !ok || def == "" || strings.ContainsAny(def, ".*> \t\r\n") {
		return fmt.Errorf("%w: %q", ErrReplyTo, subject)
	}
	return nil
}
