package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/sqldb"
)

// RelayConfig tunes a Relay. The zero value is usable.
type RelayConfig struct {
	// BatchSize is the most rows claimed and published at once; default 500.
	BatchSize int
	// PollInterval is the poll when no wake-up comes; default 1s on PostgreSQL and 100ms on
	// SQLite; with a ClaimDelay, at least half of it. A relay is woken by Wake and Committed in its
	// own process and, with ListenDSN, by writers in other processes that set
	// WriterConfig.Notify; rows of any other commit wait for the poll.
	PollInterval time.Duration
	// ListenDSN, on PostgreSQL, is the DSN of a connection the relay LISTENs on (the same database
	// and schema as db), to be woken by the commits of writers with WriterConfig.Notify. Commits
	// send no NOTIFY on their own (they did before outbox migration 0002). Empty: poll. Not used
	// with a ClaimDelay (the process that commits publishes from memory).
	ListenDSN string
	// Retention keeps published rows for this long (a replay source, should the bus lose them)
	// and then prunes them in the background; 0 deletes a row as soon as it is acknowledged.
	Retention time.Duration
	// Workers is the number of batches one relay has in flight at once on PostgreSQL (each claims
	// its own rows with SKIP LOCKED, so the database work of one overlaps the publishing of
	// another); default 2. SQLite always uses 1.
	Workers int
	// MaxAttempts is how many times a message failing because of itself (see
	// bus.IsPermanentPublishError) is tried before it is quarantined; default 5. Outages
	// (NATS unreachable, acks timing out) never count: those rows are retried until they go out.
	MaxAttempts int
	// MaxBackoff caps the exponential backoff after a failed batch (from 100ms); default 5s.
	MaxBackoff time.Duration
	// ShutdownTimeout bounds how long Run, once its context is done, spends finishing the batch it
	// claimed; default 30s.
	ShutdownTimeout time.Duration
	// Logger receives lifecycle (Info), retried failures (Warn) and quarantines (Error); nil
	// discards.
	Logger *slog.Logger
	// Name names this outbox in metrics (the "outbox" attribute) and logs, for processes that relay
	// several databases; default "outbox".
	Name string
	// TracerProvider records one producer span per published batch, linked (not parented) to each
	// message's trace, so a saga's trace does not fill up with relay spans. Default: the global
	// provider (otel.GetTracerProvider).
	TracerProvider trace.TracerProvider
	// MeterProvider receives the relay's metrics: sagaflow.relay.published and .quarantined,
	// sagaflow.outbox.backlog, .oldest_unpublished_age and .quarantined (read from the database at
	// each collection while Run runs). Default: the global provider (otel.GetMeterProvider).
	MeterProvider metric.MeterProvider
	// ClaimDelay leaves rows younger than this to the process that wrote them, which publishes them
	// from memory (Relay.Committed): the claim only picks up what that missed (a failed publish, a
	// crash). 0 (the default) claims every committed row; the participant and the orchestrator
	// node set 2s on their own relays.
	ClaimDelay time.Duration
	// PublisherDecorator, when set, wraps the JetStream publisher the relay builds in Run (metrics,
	// fault injection in tests). The decorated publisher must pass the inner publisher's errors
	// through unchanged: the relay reads from them which messages of a batch were not stored.
	PublisherDecorator message.PublisherDecorator
}

func (c RelayConfig) withDefaults(d sqldb.Dialect) RelayConfig {
	if c.BatchSize <= 0 {
		c.BatchSize = 500
	}
	if c.PollInterval <= 0 {
		c.PollInterval = time.Second
		if d == sqldb.SQLite {
			c.PollInterval = 100 * time.Millisecond
		}
		if c.ClaimDelay > 0 {
			// Rows become claimable ClaimDelay after their commit at the earliest.
			c.PollInterval = max(c.PollInterval, c.ClaimDelay/2)
		}
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 5
	}
	if c.Workers <= 0 {
		c.Workers = 2
	}
	if d == sqldb.SQLite {
		c.Workers = 1
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 5 * time.Second
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Name == "" {
		c.Name = "outbox"
	}
	c.Logger = c.Logger.With("component", "relay", "outbox", c.Name)
	if c.TracerProvider == nil {
		c.TracerProvider = otel.GetTracerProvider()
	}
	if c.MeterProvider == nil {
		c.MeterProvider = otel.GetMeterProvider()
	}
	return c
}

// Relay publishes committed outbox rows to the bus and marks them published. Run any number of
// relays on PostgreSQL (they share the work through row locks); run one per database on SQLite.
type Relay struct {
	db    *sqlx.DB
	js    jetstream.JetStream
	pub   batchPublisher // set by Run
	cfg   RelayConfig
	store storage
	wake  []chan struct{} // one per worker

	published   atomic.Int64
	quarantined atomic.Int64
	tel         relayTelemetry

	// direct holds the messages Committed hands over (see direct.go).
	direct        chan bus.Message
	directDropped atomic.Int64
}

// NewRelay returns a relay reading db's outbox (PostgreSQL or SQLite, detected from db's driver)
// and publishing to js, pipelined, with Nats-Msg-Id set to each row's message id. cfg may be nil for
// the defaults. The streams the rows are published to must exist (EnsureStreams); js is not closed
// by the relay.
func NewRelay(db *sqlx.DB, js jetstream.JetStream, cfg *RelayConfig) *Relay {
	var c RelayConfig
	if cfg != nil {
		c = *cfg
	}
	d := sqldb.DialectOf(db)
	r := &Relay{db: db, js: js, cfg: c.withDefaults(d), store: storage{dialect: d}}
	r.store.claimDelay = r.cfg.ClaimDelay
	r.direct = make(chan bus.Message, 4*r.cfg.BatchSize)
	r.tel = newRelayTelemetry(r.cfg)
	for range r.cfg.Workers {
		r.wake = append(r.wake, make(chan struct{}, 1))
	}
	return r
}

// Wake nudges the relay to look for rows now instead of at its next poll; call it after committing
// outbox rows in this process (SQLite has no NOTIFY). It never blocks.
func (r *Relay) Wake() {
	for _, w := range r.wake {
		select {
		case w <- struct{}{}:
		default:
		}
	}
}

// Stats are the relay's observability figures.
type Stats struct {
	// Backlog is the number of committed rows waiting to be published (quarantined excluded).
	Backlog int64
	// OldestUnpublishedAge is the age of the oldest of them; 0 when there are none.
	OldestUnpublishedAge time.Duration
	// Published counts messages this relay has had acknowledged since it was created.
	Published int64
	// Quarantined is the number of rows in the outbox that failed MaxAttempts times and wait for
	// an operator (all relays'); QuarantinedByRelay counts those this relay quarantined.
	Quarantined        int64
	QuarantinedByRelay int64
}

// Stats reads the backlog from the database and this relay's counters.
func (r *Relay) Stats(ctx context.Context) (Stats, error) {
	backlog, oldest, quarantined, err := r.store.stats(ctx, r.db)
	if err != nil {
		return Stats{}, fmt.Errorf("relay stats: %w", err)
	}
	return Stats{
		Backlog:              backlog,
		OldestUnpublishedAge: oldest,
		Published:            r.published.Load(),
		Quarantined:          quarantined,
		QuarantinedByRelay:   r.quarantined.Load(),
	}, nil
}

// Run publishes until ctx is done, then finishes the batch it has claimed (within
// ShutdownTimeout) and returns nil. It returns an error only if it cannot start (the LISTEN
// connection cannot be set up). Failures while running are logged and retried with backoff; no
// row is ever dropped.
func (r *Relay) Run(ctx context.Context) error {
	if r.js == nil {
		return errors.New("relay: JetStream is nil")
	}
	pub, err := bus.NewPublisher(r.js, bus.PublisherConfig{Logger: r.cfg.Logger, MeterProvider: r.cfg.MeterProvider})
	if err != nil {
		return fmt.Errorf("relay: publisher: %w", err)
	}
	defer pub.Close() // nothing is in flight once the workers have returned
	r.pub = pub
	if r.cfg.PublisherDecorator != nil {
		decorated, err := r.cfg.PublisherDecorator(pub)
		if err != nil {
			return fmt.Errorf("relay: decorate publisher: %w", err)
		}
		r.pub = watermillBatch{decorated}
	}
	r.cfg.Logger.InfoContext(ctx, "relay started", "batch_size", r.cfg.BatchSize, "poll_interval", r.cfg.PollInterval)
	defer r.cfg.Logger.InfoContext(ctx, "relay stopped")
	reg, err := r.observeBacklog()
	if err != nil {
		return fmt.Errorf("relay metrics: %w", err)
	}
	defer func() { _ = reg.Unregister() }()
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// With a ClaimDelay every row younger than it is published from memory by the process that
	// wrote it, so a notification at commit could only wake the workers to claim nothing: poll.
	if r.store.dialect == sqldb.Postgres && r.cfg.ListenDSN != "" && r.cfg.ClaimDelay == 0 {
		l, err := r.listen(ctx)
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.forwardNotifications(ctx, l)
		}()
	}
	if r.cfg.Retention > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.pruneLoop(ctx)
		}()
	}
	for i := range r.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.work(ctx, r.wake[i])
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.sendDirect(ctx)
	}()
	wg.Wait()
	return nil
}

// work runs claim-publish cycles until ctx is done: at once while batches come back full,
// otherwise on a wake-up or after PollInterval, and after a backoff when a batch failed.
func (r *Relay) work(ctx context.Context, wake <-chan struct{}) {
	backoff := time.Duration(0)
	for ctx.Err() == nil {
		n, err := r.cycle(ctx)
		if err != nil && ctx.Err() != nil {
			return // the claim was cancelled by the shutdown; nothing was claimed
		}
		if err != nil {
			backoff = min(max(2*backoff, 100*time.Millisecond), r.cfg.MaxBackoff)
			r.cfg.Logger.WarnContext(ctx, "publish batch failed; retrying", "err", err, "backoff", backoff)
			if !sleep(ctx, backoff) {
				return
			}
			continue
		}
		backoff = 0
		if n == r.cfg.BatchSize {
			continue // more may be waiting
		}
		t := time.NewTimer(r.cfg.PollInterval)
		select {
		case <-ctx.Done():
		case <-wake:
		case <-t.C:
		}
		t.Stop()
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// cycle claims one batch, publishes it and records the outcome; it returns the number of rows
// claimed, and an error when rows were left unpublished for a reason outside the messages
// themselves (the caller backs off). Once rows are claimed it finishes even if ctx ends (the
// drain), within ShutdownTimeout.
func (r *Relay) cycle(ctx context.Context) (int, error) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.ShutdownTimeout)
	defer cancel()
	var res outcome
	if r.store.dialect == sqldb.Postgres {
		// The claim's row locks are held while publishing, so a crashed relay's rows are free
		// again at once (its transaction aborts) and are re-published under the same message id.
		n := 0
		err := sqldb.InTx(dctx, r.db, func(tx *sqlx.Tx) error {
			rows, err := r.store.claim(ctx, tx, r.cfg.BatchSize)
			if err != nil || len(rows) == 0 {
				return err
			}
			n = len(rows)
			res = r.publish(ctx, rows)
			return r.record(dctx, tx, rows, res)
		})
		if err != nil {
			return n, err
		}
		r.countPublished(ctx, res)
		return n, res.transient
	}
	// SQLite: no row locks and one writer; claim with a plain read and record the outcome in a
	// short transaction, so writers are not held up while the batch is in flight.
	rows, err := r.store.claim(ctx, r.db, r.cfg.BatchSize)
	if err != nil || len(rows) == 0 {
		return 0, err
	}
	res = r.publish(ctx, rows)
	if err := sqldb.InTx(dctx, r.db, func(tx *sqlx.Tx) error { return r.record(dctx, tx, rows, res) }); err != nil {
		return len(rows), err
	}
	r.countPublished(ctx, res)
	return len(rows), res.transient
}

// batchPublisher publishes a batch and reports, in a *bus.PublishError, which messages were not
// stored: *bus.Publisher, or watermillBatch around a decorated publisher.
type batchPublisher interface {
	PublishBatch(ctx context.Context, msgs []bus.Message) error
}

// watermillBatch publishes through a Watermill publisher (RelayConfig.PublisherDecorator's), one
// Publish call per run of consecutive messages to the same subject, that subject as the topic.
type watermillBatch struct{ pub message.Publisher }

// PublishBatch publishes msgs run by run and returns the failures of all runs in one
// *bus.PublishError, indexed by position in msgs: a run's *bus.PublishError is re-indexed, and any
// other error from a run fails each of its messages with that error.
func (w watermillBatch) PublishBatch(_ context.Context, msgs []bus.Message) error {
	var failures []bus.MessageError
	for start := 0; start < len(msgs); {
		end := start + 1
		for end < len(msgs) && msgs[end].Subject == msgs[start].Subject {
			end++
		}
		failures = append(failures, w.publishRun(msgs[start:end], start)...)
		start = end
	}
	if len(failures) > 0 {
		return &bus.PublishError{Failures: failures}
	}
	return nil
}

// publishRun publishes run (messages to one subject, at offset in the batch) in one Publish call
// and returns its failures, indexed by position in the batch.
func (w watermillBatch) publishRun(run []bus.Message, offset int) []bus.MessageError {
	wm := make([]*message.Message, len(run))
	for i, m := range run {
		wm[i] = message.NewMessage(m.ID, m.Payload)
		for k, v := range m.Headers {
			wm[i].Metadata[k] = v
		}
	}
	err := w.pub.Publish(run[0].Subject, wm...)
	if err == nil {
		return nil
	}
	var pe *bus.PublishError
	if errors.As(err, &pe) {
		failures := make([]bus.MessageError, len(pe.Failures))
		for i, f := range pe.Failures {
			f.Index += offset
			failures[i] = f
		}
		return failures
	}
	failures := make([]bus.MessageError, len(run))
	for i, m := range run {
		failures[i] = bus.MessageError{Index: offset + i, UUID: m.ID, Subject: m.Subject, Err: err}
	}
	return failures
}

// outcome is what became of a published batch.
type outcome struct {
	failed    map[int]error // by row index; absent = acknowledged
	published int
	transient error // the first failure not caused by the message itself, if any
}

// publish sends rows as one batch, under a span linked to each message's trace.
func (r *Relay) publish(ctx context.Context, rows []outboxRow) (res outcome) {
	msgs := make([]bus.Message, len(rows))
	for i, row := range rows {
		m := bus.Message{Subject: row.Subject, ID: row.MessageID, Payload: row.Payload}
		if len(row.Headers) > 0 {
			// Write stored a JSON object of strings; anything else would be a hand-made row,
			// published without headers rather than blocking the outbox.
			_ = json.Unmarshal(row.Headers, &m.Headers)
		}
		msgs[i] = m
	}
	span := r.startPublishSpan(ctx, msgs)
	defer func() { endPublishSpan(span, res) }()
	res = outcome{failed: map[int]error{}}
	if err := r.pub.PublishBatch(ctx, msgs); err != nil {
		var pe *bus.PublishError
		if !errors.As(err, &pe) {
			// Unknown shape: nothing is known to be stored; all are retried.
			for i := range rows {
				res.failed[i] = err
			}
		} else {
			for _, f := range pe.Failures {
				res.failed[f.Index] = f.Err
			}
		}
	}
	res.published = len(rows) - len(res.failed)
	for i, row := range rows {
		if err, bad := res.failed[i]; bad && !bus.IsPermanentPublishError(err) {
			res.transient = fmt.Errorf("publish message %s to %s (%d of %d in the batch not published): %w",
				row.MessageID, row.Subject, len(res.failed), len(rows), err)
			break
		}
	}
	return res
}

// record marks the acknowledged rows published and counts permanent failures (quarantining at
// MaxAttempts); rows that failed for other reasons are left as they were.
func (r *Relay) record(ctx context.Context, tx *sqlx.Tx, rows []outboxRow, res outcome) error {
	ok := make([]int64, 0, len(rows))
	for i, row := range rows {
		err, bad := res.failed[i]
		switch {
		case !bad:
			ok = append(ok, row.Seq)
		case bus.IsPermanentPublishError(err):
			quarantined, err2 := r.store.markFailed(ctx, tx, row, err.Error(), r.cfg.MaxAttempts)
			if err2 != nil {
				return err2
			}
			if quarantined {
				r.quarantined.Add(1)
				r.tel.quarantined.Add(ctx, 1, r.tel.attrs)
				r.cfg.Logger.ErrorContext(ctx, "outbox message quarantined", "message_id", row.MessageID, "subject", row.Subject, "attempt", row.Attempts+1, "err", err)
			} else {
				r.cfg.Logger.WarnContext(ctx, "outbox message refused; will retry", "message_id", row.MessageID, "subject", row.Subject, "attempt", row.Attempts+1, "err", err)
			}
		}
	}
	return r.store.markPublished(ctx, tx, ok, r.cfg.Retention > 0)
}

// listen opens the LISTEN connection on this schema's channel (see WriterConfig.Notify).
func (r *Relay) listen(ctx context.Context) (*pq.Listener, error) {
	var schema string
	if err := r.db.GetContext(ctx, &schema, `SELECT current_schema()`); err != nil {
		return nil, fmt.Errorf("relay: find schema for LISTEN: %w", err)
	}
	l := pq.NewListener(r.cfg.ListenDSN, 100*time.Millisecond, r.cfg.MaxBackoff, func(ev pq.ListenerEventType, err error) {
		if err != nil {
			r.cfg.Logger.WarnContext(ctx, "outbox listener", "event", int(ev), "err", err)
		}
	})
	channel := "sagaflow_outbox_" + schema
	if err := l.Listen(channel); err != nil {
		_ = l.Close()
		return nil, fmt.Errorf("relay: LISTEN %s on %s: %w", channel, sqldb.Redact(r.cfg.ListenDSN), err)
	}
	return l, nil
}

// forwardNotifications turns notifications into wake-ups until ctx ends, then closes l. A nil
// notification (the connection was re-established, notifications may be lost) wakes too.
func (r *Relay) forwardNotifications(ctx context.Context, l *pq.Listener) {
	defer l.Close()
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.NotificationChannel():
			r.Wake()
		}
	}
}

// pruneLoop deletes rows published more than Retention ago, every Retention/2 (1s to 1m).
func (r *Relay) pruneLoop(ctx context.Context) {
	every := min(max(r.cfg.Retention/2, time.Second), time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n, err := r.store.prune(ctx, r.db, r.cfg.Retention)
			if err != nil {
				r.cfg.Logger.WarnContext(ctx, "prune published outbox rows", "err", err)
			} else if n > 0 {
				r.cfg.Logger.DebugContext(ctx, "pruned published outbox rows", "rows", n)
			}
		}
	}
}
