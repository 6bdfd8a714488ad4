package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
)

// ConsumerConfig says which durable pull consumer a Consumer reads and how.
type ConsumerConfig struct {
	// Stream the consumer reads; required.
	Stream string
	// Durable names the pull consumer, shared by every replica (a consumer group); required. It is
	// created or updated with CreateOrUpdateConsumer and never deleted by Sagaflow.
	Durable string
	// FilterSubjects are the consumer's subject filters; at least one is required.
	FilterSubjects []string
	// Namespace is the installation's namespace: dead letters go to
	// Namespace.Subject("saga.dlq.")+<subject>.
	Namespace Namespace
	// Batch is the most messages handed to one call of the handler; default 64. The Consumer never
	// waits to fill a batch: it hands over what JetStream has delivered, so a quiet consumer handles
	// each message at once and a busy one pays one call (one transaction) for many.
	Batch int
	// AckWait is how long JetStream waits for a verdict before redelivering; default 30s. A handler
	// call that runs longer than half of it makes the Consumer send in-progress acks for its batch.
	AckWait time.Duration
	// MaxDeliver bounds deliveries of one message; default 5. A Retry verdict on the last delivery
	// dead-letters the message instead, with the retry's cause as the reason.
	MaxDeliver int
	// MaxAckPending bounds unacknowledged messages across all replicas; default 1000.
	MaxAckPending int
	// CheckInterval is how often the Consumer asks JetStream for its consumer, to recreate it (and
	// its stream) when it is missing; default 5s.
	CheckInterval time.Duration
	// ShutdownTimeout bounds the handler call in flight when Run's context ends: the call's context
	// outlives Run's by this much, so the batch commits and is acknowledged; default 10s.
	ShutdownTimeout time.Duration
	// Logger receives ack failures and recreations (Warn), dead letters (Warn) and abandoned
	// messages (Error); nil discards.
	Logger *slog.Logger
	// MeterProvider receives RecreatedMetric, AbandonedMetric and sagaflow.dead_lettered; nil: the
	// global provider.
	MeterProvider metric.MeterProvider
	// LogAttrs, when set, reads the attributes a dead letter's log line carries besides the bus's
	// own (for sagas, protocol.LogAttrs: saga, definition, step); the bus knows nothing of sagas.
	LogAttrs func(message.Metadata) []any
}

func (c ConsumerConfig) withDefaults() ConsumerConfig {
	if c.Batch == 0 {
		c.Batch = 64
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	return c
}

func (c ConsumerConfig) validate() error {
	var errs []error
	if len(c.FilterSubjects) == 0 {
		errs = append(errs, errors.New("ConsumerConfig.FilterSubjects: at least one required"))
	}
	if c.Batch < 1 {
		errs = append(errs, fmt.Errorf("ConsumerConfig.Batch %d: must be at least 1", c.Batch))
	}
	if c.ShutdownTimeout < 0 {
		errs = append(errs, fmt.Errorf("ConsumerConfig.ShutdownTimeout %s: must not be negative", c.ShutdownTimeout))
	}
	if err := c.Namespace.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("ConsumerConfig.Namespace: %w", err))
	}
	return errors.Join(errs...)
}

// subscriberConfig is the part of c the underlying subscription machinery (start, heal, report
// abandoned messages) reads.
func (c ConsumerConfig) subscriberConfig() SubscriberConfig {
	return SubscriberConfig{
		Stream:         c.Stream,
		Durable:        c.Durable,
		FilterSubjects: c.FilterSubjects,
		AckWait:        c.AckWait,
		MaxDeliver:     c.MaxDeliver,
		MaxAckPending:  c.MaxAckPending,
		MaxInFlight:    c.Batch,
		CheckInterval:  c.CheckInterval,
		Logger:         c.Logger,
		MeterProvider:  c.MeterProvider,
	}
}

// Delivery is one message handed to a Consumer's handler.
type Delivery struct {
	// Subject is the subject the message was published to.
	Subject string
	// ID is the message's id: its Nats-Msg-Id without the "<subject>:" prefix a Publisher puts
	// before it (see MessageUUID), or "<stream>:<sequence>" when it has none.
	ID string
	// Headers are the message's NATS headers (first value of each), Nats-Msg-Id and
	// Nats-Expected-* left out; keys keep their case.
	Headers message.Metadata
	// Payload is the message's data.
	Payload []byte
	// Attempt is the JetStream delivery count: 1 on the first delivery.
	Attempt int

	jm jetstream.Msg
}

// verdictKind is what a Verdict tells JetStream.
type verdictKind int

const (
	verdictAck verdictKind = iota
	verdictRetry
	verdictDeadLetter
)

// Verdict is a handler's decision on one Delivery: Ack, Retry or ToDeadLetter. The zero Verdict is
// Ack.
type Verdict struct {
	kind   verdictKind
	after  time.Duration
	reason string
}

// Ack is the verdict for a message handled for good: it is acknowledged.
func Ack() Verdict { return Verdict{kind: verdictAck} }

// Retry is the verdict for a message to deliver again after the given delay (0: at once); cause
// says why, and becomes the dead-letter reason when this was the message's last allowed delivery.
// The delay is the one after a first delivery: each further delivery doubles it, up to AckWait
// (see nakDelay), so a message that fails only while its database restarts is not dead-lettered
// after a few seconds of retries.
func Retry(after time.Duration, cause error) Verdict {
	v := Verdict{kind: verdictRetry, after: max(after, 0), reason: "retry requested"}
	if cause != nil {
		v.reason = cause.Error()
	}
	return v
}

// ToDeadLetter is the verdict for a message no redelivery can fix: it goes to the dead-letter
// stream with reason in its HeaderDLQReason header, then is acknowledged.
func ToDeadLetter(reason string) Verdict { return Verdict{kind: verdictDeadLetter, reason: reason} }

// String names the verdict, for logs and tests: "ack", "retry after 1s: <cause>",
// "dead-letter: <reason>".
func (v Verdict) String() string {
	switch v.kind {
	case verdictRetry:
		return fmt.Sprintf("retry after %s: %s", v.after, v.reason)
	case verdictDeadLetter:
		return "dead-letter: " + v.reason
	default:
		return "ack"
	}
}

// HandlerFunc handles one batch of deliveries and returns one verdict per delivery, in the same
// order. A missing verdict (a short slice) is a Retry at once.
type HandlerFunc func(ctx context.Context, batch []Delivery) []Verdict

// Consumer reads one durable JetStream pull consumer in batches on one goroutine (Run's): it
// fetches what JetStream has delivered, up to Batch messages, calls the handler once with all of
// them, and settles each message by its verdict (double acks sent together and confirmed in one
// round trip, naks with delay, dead letters published to the dead-letter stream in one pipelined
// publish). A consumer or stream that goes missing while it runs is recreated, as for a
// Subscriber. A message whose last allowed delivery (MaxDeliver) is not settled for good (its
// dead-letter publish failed, Run ended before its turn) is logged at Error and counted in
// AbandonedMetric, never dropped silently.
type Consumer struct {
	js     jetstream.JetStream
	cfg    ConsumerConfig
	sub    *Subscriber // the subscription machinery: consumer creation, healing, abandoned messages
	pub    *Publisher  // dead letters
	report func(ctx context.Context, md message.Metadata)
	ready  chan struct{}
	ran    atomic.Bool
}

// NewConsumer returns a Consumer; it fails on an invalid cfg. Nothing is created until Run.
func NewConsumer(js jetstream.JetStream, cfg ConsumerConfig) (*Consumer, error) {
	if js == nil {
		return nil, errors.New("new consumer: jetstream context is nil")
	}
	cfg = cfg.withDefaults()
	sub, err := NewSubscriber(js, cfg.subscriberConfig())
	if err = errors.Join(err, cfg.validate()); err != nil {
		return nil, fmt.Errorf("new consumer: %w", err)
	}
	cfg.Logger = sub.cfg.Logger
	pub, err := NewPublisher(js, PublisherConfig{Logger: cfg.Logger, MeterProvider: cfg.MeterProvider})
	if err != nil {
		return nil, fmt.Errorf("new consumer: dead-letter publisher: %w", err)
	}
	return &Consumer{js: js, cfg: cfg, sub: sub, pub: pub,
		report: deadLetterReporter(cfg.MeterProvider, cfg.Logger, cfg.Durable, cfg.LogAttrs), ready: make(chan struct{})}, nil
}

// Ready is closed once Run has created or found its consumer and consumes it.
func (c *Consumer) Ready() <-chan struct{} { return c.ready }

// fillWait is how long Run waits for one more message while filling a batch. Messages JetStream
// has already delivered are taken at once; this only bounds the look for more.
const fillWait = 100 * time.Microsecond

// Run creates or updates the consumer (recreating its stream first if it is missing), then hands
// batches to handle until ctx ends. A batch being handled when ctx ends finishes (its context
// lasts ShutdownTimeout longer) and is settled; messages fetched and not yet handed over are
// Nacked, so another replica gets them at once. Run returns nil after ctx ends, or an error when
// it cannot start or its connection is closed for good. Run may be called once.
func (c *Consumer) Run(ctx context.Context, handle HandlerFunc) error {
	if !c.ran.CompareAndSwap(false, true) {
		return errors.New("consumer: Run called twice")
	}
	cfg := c.sub.cfg
	cc := jetstream.ConsumerConfig{
		Durable:       cfg.Durable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxDeliver:    cfg.MaxDeliver,
		MaxAckPending: cfg.MaxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	if len(cfg.FilterSubjects) == 1 {
		cc.FilterSubject = cfg.FilterSubjects[0]
	} else {
		cc.FilterSubjects = cfg.FilterSubjects
	}
	cs := &consumption{s: c.sub, cc: cc, heal: newHealer(c.js, cfg.Logger, cfg.MeterProvider)}
	if err := cs.start(ctx); err != nil {
		return fmt.Errorf("consume %s/%s: %w", cfg.Stream, cfg.Durable, err)
	}
	iter, err := cs.cons.Messages(jetstream.PullMaxMessages(cfg.MaxInFlight))
	if err != nil {
		return fmt.Errorf("consume %s/%s: %w", cfg.Stream, cfg.Durable, err)
	}
	cs.mu.Lock()
	cs.iter = iter
	cs.mu.Unlock()
	close(c.ready)
	stopIter := context.AfterFunc(ctx, cs.stop) // Next returns at once when ctx ends
	defer stopIter()

	// Handler calls outlive ctx by ShutdownTimeout, so the batch in flight commits and is settled.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stopWork := context.AfterFunc(ctx, func() { time.AfterFunc(c.cfg.ShutdownTimeout, cancelWork) })
	defer stopWork()

	lastCheck := time.Now()
	idle := max(cfg.CheckInterval, 50*time.Millisecond)
	for {
		batch, end := c.fill(ctx, cs, iter, idle)
		if len(batch) > 0 {
			c.settle(work, batch, c.call(work, handle, batch))
		}
		if end == endStopped || ctx.Err() != nil {
			cs.stop()
			cs.mu.Lock()
			iter = cs.iter
			cs.mu.Unlock()
			cs.handBack(work, iter)
			return c.ended(ctx)
		}
		if end == endOpen && time.Since(lastCheck) < cfg.CheckInterval {
			continue
		}
		lastCheck = time.Now()
		if end == endOpen && !cs.missing(ctx) {
			continue
		}
		iter.Stop()
		if iter = cs.resume(ctx); iter == nil {
			return c.ended(ctx)
		}
		cs.mu.Lock()
		if cs.stopped {
			cs.mu.Unlock()
			iter.Stop()
			return nil
		}
		cs.iter = iter
		cs.mu.Unlock()
	}
}

// ended is Run's result when it stops: nil when ctx ended, else the connection was closed for good.
func (c *Consumer) ended(ctx context.Context) error {
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("consume %s/%s: %w", c.cfg.Stream, c.cfg.Durable, nats.ErrConnectionClosed)
}

// fillEnd is how a fill ended.
type fillEnd int

const (
	endOpen    fillEnd = iota // the iterator is fine: fetch again
	endLost                   // the consumer or its stream went missing: recreate them
	endStopped                // ctx ended or the connection closed for good
)

// fill waits (up to idle) for a first message, then takes what else JetStream has delivered, up
// to Batch.
func (c *Consumer) fill(ctx context.Context, cs *consumption, iter jetstream.MessagesContext, idle time.Duration) ([]Delivery, fillEnd) {
	var batch []Delivery
	wait := idle
	for len(batch) < c.cfg.Batch {
		jm, err := iter.Next(jetstream.NextMaxWait(wait))
		if err != nil {
			return batch, c.nextFailed(ctx, cs, err, len(batch) == 0)
		}
		if ctx.Err() != nil {
			cs.nakUnsent(ctx, jm)
			return batch, endStopped
		}
		batch = append(batch, delivery(c.cfg.Stream, jm))
		wait = fillWait
	}
	return batch, endOpen
}

// nextFailed tells what an iterator's error means; first says no message was taken yet.
func (c *Consumer) nextFailed(ctx context.Context, cs *consumption, err error, first bool) fillEnd {
	switch {
	case ctx.Err() != nil:
		return endStopped
	case errors.Is(err, jetstream.ErrMsgIteratorClosed):
		cs.mu.Lock()
		stopped := cs.stopped
		cs.mu.Unlock()
		if stopped || c.js.Conn().IsClosed() {
			return endStopped
		}
		return endLost // closed under us: look at the consumer
	case errors.Is(err, jetstream.ErrConsumerDeleted):
		return endLost
	case errors.Is(err, nats.ErrTimeout):
		return endOpen
	}
	if first {
		// Heartbeat loss and the like: the iterator keeps trying; do not spin.
		c.cfg.Logger.WarnContext(ctx, "consume", "stream", c.cfg.Stream, "consumer", c.cfg.Durable, "err", err)
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return endStopped
		}
	}
	return endOpen
}

// delivery converts a JetStream message.
func delivery(stream string, jm jetstream.Msg) Delivery {
	h := jm.Headers()
	d := Delivery{Subject: jm.Subject(), ID: MessageUUID(jm.Subject(), h.Get(nats.MsgIdHdr)), Payload: jm.Data(), jm: jm}
	md, mdErr := jm.Metadata()
	if mdErr == nil {
		d.Attempt = int(md.NumDelivered)
		if d.ID == "" {
			d.ID = stream + ":" + strconv.FormatUint(md.Sequence.Stream, 10)
		}
	}
	d.Headers = make(message.Metadata, len(h))
	for k, v := range h {
		if k == nats.MsgIdHdr || strings.HasPrefix(k, "Nats-Expected-") || len(v) == 0 {
			continue
		}
		d.Headers[k] = v[0]
	}
	return d
}

// call runs handle on batch, sending in-progress acks for the batch every AckWait/2 while it runs.
// A panic in handle is a programmer error and is not recovered.
func (c *Consumer) call(ctx context.Context, handle HandlerFunc, batch []Delivery) []Verdict {
	var mu sync.Mutex
	done := false
	every := c.sub.cfg.AckWait / 2
	var progress *time.Timer
	mu.Lock() // the callback reads progress
	progress = time.AfterFunc(every, func() {
		mu.Lock()
		defer mu.Unlock()
		if done {
			return
		}
		for _, d := range batch {
			if err := d.jm.InProgress(); err != nil {
				c.cfg.Logger.WarnContext(ctx, "in-progress ack", "message_id", d.ID, "subject", d.Subject, "err", err)
			}
		}
		progress.Reset(every)
	})
	mu.Unlock()
	verdicts := handle(ctx, batch)
	mu.Lock()
	done = true
	progress.Stop()
	mu.Unlock()
	return verdicts
}

// settle tells JetStream each delivery's verdict: dead letters are published together and then
// acked (nacked when their publish failed), acks are double acks sent together (see ack), retries
// are nacked with their delay. A Retry on a last delivery is a dead letter.
func (c *Consumer) settle(ctx context.Context, batch []Delivery, verdicts []Verdict) {
	var acks, dead []int
	for i, d := range batch {
		v := Retry(0, errors.New("the handler gave no verdict"))
		if i < len(verdicts) {
			v = verdicts[i]
		}
		switch {
		case v.kind == verdictDeadLetter:
			batch[i].Headers = deadLetterHeaders(d, v.reason)
			dead = append(dead, i)
		case v.kind == verdictRetry && d.Attempt >= c.sub.cfg.MaxDeliver:
			batch[i].Headers = deadLetterHeaders(d, fmt.Sprintf("%s (delivery %d of %d)", v.reason, d.Attempt, c.sub.cfg.MaxDeliver))
			dead = append(dead, i)
		case v.kind == verdictRetry:
			c.nak(ctx, d, nakDelay(v.after, c.sub.cfg.AckWait, uint64(max(d.Attempt, 1))))
		default:
			acks = append(acks, i)
		}
	}
	acks = append(acks, c.deadLetter(ctx, batch, dead)...)
	c.ack(ctx, batch, acks)
}

// ackTimeout bounds the wait for the server's confirmations of a batch's acks.
const ackTimeout = 5 * time.Second

// ack double-acks batch[acks...] in one round trip: every ack goes out as a request ("+ACK" with a
// reply subject, what jetstream.Msg.DoubleAck sends) before any answer is awaited, so the server
// confirms each ack it applied and a batch costs one round trip instead of one per message. An ack
// that is not confirmed (the consumer is gone, the connection dropped) is logged; JetStream then
// delivers the message again, which the receiver's inbox or barrier answers.
func (c *Consumer) ack(ctx context.Context, batch []Delivery, acks []int) {
	if len(acks) == 0 {
		return
	}
	nc := c.js.Conn()
	answers := make(chan *nats.Msg, len(acks))
	inbox := nc.NewInbox()
	sub, err := nc.ChanSubscribe(inbox+".*", answers)
	if err != nil {
		c.cfg.Logger.WarnContext(ctx, "ack: subscribe to confirmations", "acks", len(acks), "err", err)
		return
	}
	defer func() { _ = sub.Unsubscribe() }()
	sent := 0
	for k, i := range acks {
		d := batch[i]
		err := nc.PublishMsg(&nats.Msg{Subject: d.jm.Reply(), Reply: inbox + "." + strconv.Itoa(k), Data: []byte("+ACK")})
		if err != nil {
			c.cfg.Logger.WarnContext(ctx, "ack", "message_id", d.ID, "subject", d.Subject, "err", err)
			continue
		}
		sent++
	}
	timeout := time.NewTimer(ackTimeout)
	defer timeout.Stop()
	for confirmed := 0; confirmed < sent; {
		select {
		case m := <-answers:
			if m.Header.Get("Status") == "503" { // no responders: the consumer is gone
				k, _ := strconv.Atoi(m.Subject[len(inbox)+1:])
				if k >= 0 && k < len(acks) {
					d := batch[acks[k]]
					c.cfg.Logger.WarnContext(ctx, "ack", "message_id", d.ID, "subject", d.Subject, "err", nats.ErrNoResponders)
				}
			}
			confirmed++
		case <-timeout.C:
			c.cfg.Logger.WarnContext(ctx, "ack: confirmations missing", "acks", sent, "confirmed", confirmed, "err", nats.ErrTimeout)
			return
		}
	}
}

// nak hands d back for redelivery after delay.
func (c *Consumer) nak(ctx context.Context, d Delivery, delay time.Duration) {
	var err error
	if delay > 0 {
		err = d.jm.NakWithDelay(delay)
	} else {
		err = d.jm.Nak()
	}
	if err != nil {
		c.cfg.Logger.WarnContext(ctx, "nak", "message_id", d.ID, "subject", d.Subject, "err", err)
	}
	c.sub.lastDelivery(ctx, d.jm, "nacked on its last delivery")
}

// deadLetterHeaders returns d's headers plus the dead-letter headers for reason.
func deadLetterHeaders(d Delivery, reason string) message.Metadata {
	h := make(message.Metadata, len(d.Headers)+3)
	for k, v := range d.Headers {
		h[k] = v
	}
	h[HeaderDLQReason] = reason
	h[HeaderDLQSubject] = d.Subject
	h[HeaderDLQDeliveries] = strconv.Itoa(d.Attempt)
	return h
}

// deadLetter publishes batch[dead...] to the dead-letter stream in one pipelined publish and
// returns the indexes of those stored (to ack); the others are nacked, so they are not lost.
func (c *Consumer) deadLetter(ctx context.Context, batch []Delivery, dead []int) []int {
	if len(dead) == 0 {
		return nil
	}
	msgs := make([]Message, len(dead))
	for k, i := range dead {
		d := batch[i]
		msgs[k] = Message{Subject: c.cfg.Namespace.Subject(DLQPrefix) + d.Subject, ID: d.ID, Headers: d.Headers, Payload: d.Payload}
	}
	failed := map[int]error{}
	if err := c.pub.PublishBatch(ctx, msgs); err != nil {
		var pe *PublishError
		if !errors.As(err, &pe) {
			for k := range dead {
				failed[k] = err
			}
		} else {
			for _, f := range pe.Failures {
				failed[f.Index] = f.Err
			}
		}
	}
	var stored []int
	for k, i := range dead {
		d := batch[i]
		if err, ok := failed[k]; ok {
			c.cfg.Logger.WarnContext(ctx, "dead-letter publish failed; message handed back", "message_id", d.ID, "subject", d.Subject, "err", err)
			c.nak(ctx, d, 0)
			continue
		}
		c.report(ctx, d.Headers)
		stored = append(stored, i)
	}
	return stored
}
