package bus

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// SubscriberConfig says which durable consumer a Subscriber reads and how.
type SubscriberConfig struct {
	// Stream the consumer reads; required.
	Stream string
	// Durable names the pull consumers, shared by every replica of the service (a consumer group);
	// required. With FilterSubjects, it is the name of the one consumer every Subscribe reads;
	// without, each Subscribe(topic) reads its own consumer, named Subscriber.Durable(topic). A
	// consumer is created or updated with CreateOrUpdateConsumer and never deleted by Sagaflow.
	Durable string
	// FilterSubjects fixes the consumer's filter, whatever topic Subscribe is given. Empty: each
	// topic passed to Subscribe is the filter of its own consumer.
	FilterSubjects []string
	// AckWait is how long JetStream waits for an ack before redelivering; default 30s.
	AckWait time.Duration
	// MaxDeliver bounds deliveries of one message; default 5. JetStream does not deliver a message
	// again after its last delivery, whatever happens to it: pair the Subscriber with DeadLetter(pub,
	// MaxDeliver) so that a last delivery that fails goes to the dead-letter stream. A last delivery
	// that is Nacked anyway (no DeadLetter, or the dead-letter publish failed), or left unsettled, is
	// abandoned by JetStream: the Subscriber logs it at Error and counts it in AbandonedMetric.
	MaxDeliver int
	// MaxAckPending bounds unacknowledged messages across all replicas; default 1000.
	MaxAckPending int
	// MaxInFlight is how many messages one Subscriber hands to the router without waiting for
	// their acks (the router handles them concurrently); default 64.
	MaxInFlight int
	// NakDelay delays the redelivery of a Nacked message after its first delivery; each further
	// delivery doubles the delay, up to AckWait (see nakDelay), so the MaxDeliver deliveries span
	// an outage of minutes (the database restarting) instead of seconds. 0 redelivers at once.
	NakDelay time.Duration
	// CheckInterval is how often a subscription asks JetStream for its consumer, to recreate it
	// (and its stream) when it is missing and to learn its ack floor (where a recreated consumer
	// starts); default 5s. While idle it checks at most every 50ms.
	CheckInterval time.Duration
	// Logger receives ack failures and recreations (Warn) and abandoned messages (Error); nil
	// discards.
	Logger *slog.Logger
	// MeterProvider receives RecreatedMetric and AbandonedMetric; nil: the global provider.
	MeterProvider metric.MeterProvider
}

func (c SubscriberConfig) withDefaults() SubscriberConfig {
	if c.AckWait == 0 {
		c.AckWait = 30 * time.Second
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = 5
	}
	if c.MaxAckPending == 0 {
		c.MaxAckPending = 1000
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 64
	}
	if c.CheckInterval == 0 {
		c.CheckInterval = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c SubscriberConfig) validate() error {
	var errs []error
	if c.Stream == "" {
		errs = append(errs, errors.New("SubscriberConfig.Stream: required"))
	}
	if c.Durable == "" || strings.ContainsAny(c.Durable, ".*> \t") {
		errs = append(errs, fmt.Errorf("SubscriberConfig.Durable %q: required, without '.', '*', '>' or spaces", c.Durable))
	}
	if c.AckWait < 0 {
		errs = append(errs, fmt.Errorf("SubscriberConfig.AckWait %s: must not be negative", c.AckWait))
	}
	if c.MaxDeliver < 1 {
		errs = append(errs, fmt.Errorf("SubscriberConfig.MaxDeliver %d: must be at least 1", c.MaxDeliver))
	}
	if c.MaxAckPending < 1 {
		errs = append(errs, fmt.Errorf("SubscriberConfig.MaxAckPending %d: must be at least 1", c.MaxAckPending))
	}
	if c.MaxInFlight < 1 {
		errs = append(errs, fmt.Errorf("SubscriberConfig.MaxInFlight %d: must be at least 1", c.MaxInFlight))
	}
	if c.CheckInterval < 0 {
		errs = append(errs, fmt.Errorf("SubscriberConfig.CheckInterval %s: must not be negative", c.CheckInterval))
	}
	if c.NakDelay < 0 {
		errs = append(errs, fmt.Errorf("SubscriberConfig.NakDelay %s: must not be negative", c.NakDelay))
	}
	return errors.Join(errs...)
}

// Subscriber reads a durable JetStream pull consumer as a Watermill subscriber: explicit acks,
// Ack → double ack, Nack → nak (with NakDelay). Closing it stops fetching and never deletes the
// consumer, so a restart resumes where it left off. A consumer or stream that goes missing while
// it runs is recreated (see Subscribe).
type Subscriber struct {
	js        jetstream.JetStream
	cfg       SubscriberConfig
	abandoned metric.Int64Counter

	mu      sync.Mutex
	closed  bool
	closing chan struct{}
	wg      sync.WaitGroup
}

// NewSubscriber returns a Subscriber; it fails on an invalid cfg. Nothing is created until Subscribe.
func NewSubscriber(js jetstream.JetStream, cfg SubscriberConfig) (*Subscriber, error) {
	if js == nil {
		return nil, errors.New("new subscriber: jetstream context is nil")
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("new subscriber: %w", err)
	}
	mp := cfg.MeterProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	abandoned, _ := mp.Meter(meterScope).Int64Counter("sagaflow.bus.abandoned", metric.WithUnit("{message}"),
		metric.WithDescription("Messages whose last allowed delivery (MaxDeliver) was Nacked or left unsettled: JetStream will not deliver them again."))
	return &Subscriber{js: js, cfg: cfg, abandoned: abandoned, closing: make(chan struct{})}, nil
}

// AbandonedMetric counts the messages a Subscriber saw JetStream give up on: their last allowed
// delivery (SubscriberConfig.MaxDeliver) was Nacked, or was still unsettled when the subscription
// ended, so no consumer will see them again (they stay in the stream). Attributes: stream,
// consumer. Prometheus: sagaflow_bus_abandoned_total. With the DeadLetter middleware it stays at
// zero unless a dead-letter publish fails on a last delivery.
const AbandonedMetric = "sagaflow.bus.abandoned"

// Subscribe creates or updates the durable consumer Durable(topic) and returns the channel of its
// messages, closed when ctx ends or the Subscriber is closed. Every message's UUID is its
// Nats-Msg-Id without the "<subject>:" prefix a Publisher puts before it (see MsgID; a header
// without that prefix, from another client, is the UUID as it is), or "<stream>:<sequence>" when
// it has none; its metadata are its headers plus SubjectKey and DeliveryKey. The message must be
// Acked or Nacked; one left alone is redelivered after AckWait. Its context is cancelled once it is
// Acked or Nacked, and when the subscription ends (Watermill's contract).
//
// Each topic has its own consumer (without FilterSubjects), so several Subscribe calls on one
// Subscriber, with different topics, never disturb each other; two calls with the same topic (or
// any calls with FilterSubjects) read the same consumer and share its messages, as replicas do.
//
// When the subscription ends, the messages it has fetched but not handed out are Nacked, so that
// another replica gets them at once instead of after AckWait.
//
// While it runs, the subscription checks every CheckInterval that its consumer still exists. When
// the consumer or its stream is gone, it recreates the stream (with the settings EnsureStreams
// applied on this connection, or those the stream had when Subscribe started) and the consumer,
// and goes on consuming: a consumer recreated on a surviving stream starts after the last ack floor
// it saw (so every message not yet acknowledged, including those in flight here, is delivered
// again); one on a recreated stream starts at its beginning.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	filters := s.cfg.FilterSubjects
	if len(filters) == 0 {
		filters = []string{topic}
	}
	cc := jetstream.ConsumerConfig{
		Durable:       s.Durable(topic),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.cfg.AckWait,
		MaxDeliver:    s.cfg.MaxDeliver,
		MaxAckPending: s.cfg.MaxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	if len(filters) == 1 {
		cc.FilterSubject = filters[0]
	} else {
		cc.FilterSubjects = filters
	}
	c := &consumption{s: s, cc: cc, heal: newHealer(s.js, s.cfg.Logger, s.cfg.MeterProvider)}
	if err := c.start(ctx); err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", topic, err)
	}
	iter, err := c.cons.Messages(jetstream.PullMaxMessages(s.cfg.MaxInFlight))
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: consume %s/%s: %w", topic, s.cfg.Stream, cc.Durable, err)
	}
	c.iter = iter
	out := make(chan *message.Message)
	ctx, cancel := context.WithCancel(ctx)
	s.wg.Add(2)
	go func() { // stop the iterator when ctx ends or the subscriber closes
		defer s.wg.Done()
		select {
		case <-ctx.Done():
		case <-s.closing:
		}
		cancel()
		c.stop()
	}()
	go func() {
		defer s.wg.Done()
		defer cancel()
		c.run(ctx, out)
	}()
	return out, nil
}

// nameChar reports whether c may stand in a consumer name as it is.
func nameChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

// maxNameLen bounds the consumer names Durable derives (JetStream allows 255 bytes; the name is
// also a directory of the server's store).
const maxNameLen = 128

// Durable returns the name of the durable consumer Subscribe(topic) reads: the configured Durable
// when FilterSubjects is set (the name Sagaflow's own consumers have always had), else
// "<Durable>_<topic with every character other than letters, digits, '-' and '_' replaced by
// '_'>_<the first 12 hex digits of the topic's SHA-256>", shortened to 128 bytes. The hash keeps
// topics that differ only in replaced characters ("a.b", "a_b", "a.*") apart; the name is
// deterministic, so every replica and every restart finds the same consumer.
func (s *Subscriber) Durable(topic string) string {
	if len(s.cfg.FilterSubjects) > 0 {
		return s.cfg.Durable
	}
	sum := sha256.Sum256([]byte(topic))
	suffix := "_" + hex.EncodeToString(sum[:])[:12]
	readable := []byte(s.cfg.Durable + "_" + topic)
	for i := len(s.cfg.Durable) + 1; i < len(readable); i++ {
		if !nameChar(readable[i]) {
			readable[i] = '_'
		}
	}
	if len(readable)+len(suffix) > maxNameLen {
		readable = readable[:max(maxNameLen-len(suffix), 0)]
	}
	return string(readable) + suffix
}

// consumption is one subscription: the durable consumer it reads, recreated when it goes missing.
type consumption struct {
	s    *Subscriber
	cc   jetstream.ConsumerConfig
	heal *healer

	// Owned by run (and start, before run).
	cons     jetstream.Consumer
	created  time.Time // the stream's creation time when cons was created or found
	ackFloor uint64    // the consumer's ack floor (a stream sequence) when last seen

	mu      sync.Mutex
	iter    jetstream.MessagesContext
	stopped bool
}

// start creates or updates the consumer at Subscribe, recreating its stream first if it is missing.
// A consumer that exists keeps its deliver policy and start sequence (a recreated consumer starts
// at a sequence, and JetStream refuses to change that).
func (c *consumption) start(ctx context.Context) error {
	cfg := c.s.cfg
	st, err := c.s.js.Stream(ctx, cfg.Stream)
	for backoff := 100 * time.Millisecond; errors.Is(err, jetstream.ErrStreamNotFound); backoff = min(2*backoff, time.Second) {
		if _, err = c.heal.ensureStream(ctx, cfg.Stream); err != nil && !errors.Is(err, errNotSettled) {
			return err
		}
		if err != nil {
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		st, err = c.s.js.Stream(ctx, cfg.Stream)
	}
	if err != nil {
		return fmt.Errorf("stream %s: %w", cfg.Stream, err)
	}
	if obs := observedStreams(st.CachedInfo().Config); obs.withDefaults().validate() == nil {
		rememberStreams(c.s.js, obs, false)
	}
	c.created = st.CachedInfo().Created
	cc := c.cc
	if have, err := c.s.js.Consumer(ctx, cfg.Stream, c.cc.Durable); err == nil {
		hc := have.CachedInfo().Config
		cc.DeliverPolicy, cc.OptStartSeq, cc.OptStartTime = hc.DeliverPolicy, hc.OptStartSeq, hc.OptStartTime
	}
	cons, err := c.s.js.CreateOrUpdateConsumer(ctx, cfg.Stream, cc)
	if err != nil {
		return fmt.Errorf("create consumer %s on stream %s: %w", c.cc.Durable, cfg.Stream, err)
	}
	c.cons = cons
	c.ackFloor = cons.CachedInfo().AckFloor.Stream
	return nil
}

// stop stops consuming for good. It drains the iterator: the messages it has already fetched are
// still returned by Next, so that run hands them back (Nak) instead of leaving them to AckWait.
func (c *consumption) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopped = true
	if c.iter != nil {
		c.iter.Drain()
	}
}

// run consumes until ctx ends, recreating the consumer (and its stream) whenever it goes missing.
// Messages in flight when that happens keep their context and their settlement: an ack that no
// longer reaches a consumer fails (and is logged), and the recreated consumer delivers the message
// again.
func (c *consumption) run(ctx context.Context, out chan<- *message.Message) {
	var settling sync.WaitGroup
	defer func() {
		settling.Wait()
		close(out)
	}()
	slots := make(chan struct{}, c.s.cfg.MaxInFlight)
	c.mu.Lock()
	iter := c.iter
	c.mu.Unlock()
	for {
		if !c.fetch(ctx, iter, out, slots, &settling) {
			c.stop()
			c.mu.Lock()
			iter = c.iter
			c.mu.Unlock()
			c.handBack(ctx, iter)
			return
		}
		iter.Stop()
		iter = c.resume(ctx)
		if iter == nil {
			return
		}
		c.mu.Lock()
		if c.stopped {
			c.mu.Unlock()
			iter.Stop()
			return
		}
		c.iter = iter
		c.mu.Unlock()
	}
}

// handBack Naks what the drained iter still holds (fetched, never handed out), so JetStream
// delivers it again at once, to another replica or the next subscription.
func (c *consumption) handBack(ctx context.Context, iter jetstream.MessagesContext) {
	for {
		jm, err := iter.Next(jetstream.NextMaxWait(time.Second))
		if err != nil {
			return
		}
		c.nakUnsent(ctx, jm)
	}
}

// nakUnsent Naks jm, which was fetched but never handed out.
func (c *consumption) nakUnsent(ctx context.Context, jm jetstream.Msg) {
	if err := jm.Nak(); err != nil {
		c.s.cfg.Logger.WarnContext(ctx, "nak unsent message", "subject", jm.Subject(), "consumer", c.cc.Durable, "err", err)
	}
	c.s.lastDelivery(ctx, jm, "fetched on its last delivery but not handed out before the subscription ended")
}

// resume recreates what is missing and returns a new iterator over the consumer; nil when ctx
// ends or the connection is closed for good.
func (c *consumption) resume(ctx context.Context) jetstream.MessagesContext {
	cfg := c.s.cfg
	for {
		if !c.recreate(ctx) {
			return nil
		}
		iter, err := c.cons.Messages(jetstream.PullMaxMessages(cfg.MaxInFlight))
		if err == nil {
			return iter
		}
		if c.s.js.Conn().IsClosed() {
			cfg.Logger.WarnContext(ctx, "consume: connection closed", "stream", cfg.Stream, "consumer", c.cc.Durable, "err", err)
			return nil
		}
		cfg.Logger.WarnContext(ctx, "consume recreated consumer failed; retrying", "stream", cfg.Stream, "consumer", c.cc.Durable, "err", err)
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return nil
		}
	}
}

// fetch moves messages from iter to out, at most MaxInFlight unsettled at once, until ctx ends or
// iter ends (false) or the consumer is found missing (true).
func (c *consumption) fetch(ctx context.Context, iter jetstream.MessagesContext, out chan<- *message.Message,
	slots chan struct{}, settling *sync.WaitGroup) (lost bool) {
	cfg := c.s.cfg
	lastCheck := time.Now()
	// While idle, Next returns after this long so the consumer is checked; not much more often
	// than every 50ms even with a tiny CheckInterval (which then checks after every message).
	idle := max(cfg.CheckInterval, 50*time.Millisecond)
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return false
		}
		jm, err := iter.Next(jetstream.NextMaxWait(idle))
		if err != nil {
			<-slots
			switch {
			case ctx.Err() != nil:
				return false
			case errors.Is(err, jetstream.ErrMsgIteratorClosed):
				c.mu.Lock()
				stopped := c.stopped
				c.mu.Unlock()
				if stopped || c.s.js.Conn().IsClosed() {
					return false
				}
				return true // closed under us: look at the consumer
			case errors.Is(err, jetstream.ErrConsumerDeleted):
				return true
			case errors.Is(err, nats.ErrTimeout):
				// Nothing to fetch: time to check the consumer (below).
			default:
				// Heartbeat loss and the like: the iterator keeps trying; do not spin.
				cfg.Logger.WarnContext(ctx, "consume", "stream", cfg.Stream, "consumer", c.cc.Durable, "err", err)
				select {
				case <-time.After(100 * time.Millisecond):
				case <-ctx.Done():
					return false
				}
			}
		} else {
			msg := toMessage(cfg.Stream, jm)
			// The message's own context ends once it is settled (or the subscription ends), as
			// Watermill's contract says, so work tied to it stops with it.
			mctx, mcancel := context.WithCancel(ctx)
			msg.SetContext(mctx)
			if ctx.Err() != nil {
				mcancel()
				<-slots
				c.nakUnsent(ctx, jm)
				return false
			}
			select {
			case out <- msg:
			case <-ctx.Done():
				mcancel()
				<-slots
				c.nakUnsent(ctx, jm)
				return false
			}
			settling.Add(1)
			go func() {
				defer settling.Done()
				defer func() { <-slots }()
				defer mcancel()
				c.s.settle(ctx, msg, jm)
			}()
		}
		if time.Since(lastCheck) >= cfg.CheckInterval {
			lastCheck = time.Now()
			if c.missing(ctx) {
				return true
			}
		}
	}
}

// missing asks JetStream for the consumer and reports whether it (or its stream) no longer exists.
// Any other failure (NATS down, JetStream starting) is not a loss: the iterator keeps trying. On
// success it records the consumer's ack floor, where a recreated consumer starts.
func (c *consumption) missing(ctx context.Context) bool {
	ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info, err := c.cons.Info(ictx)
	if err == nil {
		c.ackFloor = info.AckFloor.Stream
		return false
	}
	return errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound)
}

// recreate brings the stream and the consumer back, retrying with backoff until it succeeds
// (true) or ctx ends (false).
func (c *consumption) recreate(ctx context.Context) bool {
	backoff := 100 * time.Millisecond
	for {
		err := c.recreateOnce(ctx)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		if !errors.Is(err, errNotSettled) {
			c.s.cfg.Logger.WarnContext(ctx, "recreate missing consumer failed; retrying", "stream", c.s.cfg.Stream,
				"consumer", c.cc.Durable, "err", err, "backoff", backoff)
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return false
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (c *consumption) recreateOnce(ctx context.Context) error {
	cfg := c.s.cfg
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := c.heal.ensureStream(rctx, cfg.Stream); err != nil {
		return err
	}
	st, err := c.s.js.Stream(rctx, cfg.Stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", cfg.Stream, err)
	}
	created := st.CachedInfo().Created
	key := cfg.Stream + "/" + c.cc.Durable
	if cons, err := c.s.js.Consumer(rctx, cfg.Stream, c.cc.Durable); err == nil {
		// It is there again (a restart that kept the store, or another replica recreated it).
		c.heal.settled(key, false)
		c.cons, c.created = cons, created
		c.ackFloor = cons.CachedInfo().AckFloor.Stream
		return nil
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("consumer %s on stream %s: %w", c.cc.Durable, cfg.Stream, err)
	}
	if !c.heal.settled(key, true) {
		return fmt.Errorf("consumer %s on stream %s: %w", c.cc.Durable, cfg.Stream, errNotSettled)
	}
	cc := c.cc
	start := uint64(0)
	if created.Equal(c.created) && c.ackFloor > 0 {
		// The same stream: start after what was acknowledged, not at its beginning (a stream
		// keeps its messages, and redelivering all of them would replay history).
		start = c.ackFloor + 1
		cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, start
	}
	cons, err := c.s.js.CreateConsumer(rctx, cfg.Stream, cc)
	if errors.Is(err, jetstream.ErrConsumerExists) {
		cons, err = c.s.js.Consumer(rctx, cfg.Stream, c.cc.Durable) // another replica was faster
	} else if err == nil {
		c.heal.settled(key, false)
		c.heal.recreated(ctx, kindConsumer, key, "stream", cfg.Stream, "consumer", c.cc.Durable, "start_sequence", start)
	}
	if err != nil {
		return fmt.Errorf("recreate consumer %s on stream %s: %w", c.cc.Durable, cfg.Stream, err)
	}
	c.cons, c.created = cons, created
	c.ackFloor = cons.CachedInfo().AckFloor.Stream
	return nil
}

// settle waits for the router's verdict on msg and tells JetStream.
func (s *Subscriber) settle(ctx context.Context, msg *message.Message, jm jetstream.Msg) {
	var acked bool
	select {
	case <-msg.Acked():
		acked = true
	case <-msg.Nacked():
	case <-ctx.Done():
		// A verdict given just before closing still counts: select picks at random among ready
		// cases, so look again before leaving the message to JetStream's redelivery.
		select {
		case <-msg.Acked():
			acked = true
		case <-msg.Nacked():
		default:
			s.lastDelivery(ctx, jm, "unsettled on its last delivery when the subscription ended")
			return
		}
	}
	if acked {
		// Double ack: the server confirms, so a handled message is not redelivered silently.
		// The ack must go out even while closing: use a short context of its own.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := jm.DoubleAck(actx); err != nil {
			s.cfg.Logger.Warn("ack", "message_id", msg.UUID, "subject", jm.Subject(), "err", err)
		}
		return
	}
	var err error
	if s.cfg.NakDelay > 0 {
		var delivered uint64 = 1
		if md, mdErr := jm.Metadata(); mdErr == nil {
			delivered = md.NumDelivered
		}
		err = jm.NakWithDelay(nakDelay(s.cfg.NakDelay, s.cfg.AckWait, delivered))
	} else {
		err = jm.Nak()
	}
	if err != nil {
		s.cfg.Logger.Warn("nak", "message_id", msg.UUID, "subject", jm.Subject(), "err", err)
	}
	s.lastDelivery(ctx, jm, "nacked on its last delivery")
}

// nakDelay is the redelivery delay of a message Nacked on its delivered-th delivery: base after the
// first, doubled after each further one, at most ceiling (AckWait: a message is never held back
// longer than one it was never answered about). With the defaults of the engine and the
// participant (1s, 30s, 10 deliveries) the last delivery comes about 2.5 minutes after the first,
// so a message that fails only because the database is restarting is not dead-lettered.
func nakDelay(base, ceiling time.Duration, delivered uint64) time.Duration {
	d := base
	for n := uint64(1); n < delivered && d < ceiling; n++ {
		d *= 2
	}
	return min(d, max(ceiling, base))
}

// lastDelivery reports jm, given up by this process, when it was its last allowed delivery: JetStream
// will not deliver it again, so it is logged at Error and counted in AbandonedMetric, never dropped
// silently. The DeadLetter middleware keeps this from happening to a message whose handler fails.
func (s *Subscriber) lastDelivery(ctx context.Context, jm jetstream.Msg, why string) {
	md, err := jm.Metadata()
	if err != nil || md.NumDelivered < uint64(s.cfg.MaxDeliver) {
		return
	}
	ctx = context.WithoutCancel(ctx)
	s.abandoned.Add(ctx, 1, metric.WithAttributes(attribute.String("stream", md.Stream), attribute.String("consumer", md.Consumer)))
	s.cfg.Logger.ErrorContext(ctx, "message abandoned: JetStream will not deliver it again", "reason", why,
		"message_id", MessageUUID(jm.Subject(), jm.Headers().Get(nats.MsgIdHdr)), "subject", jm.Subject(),
		"stream", md.Stream, "consumer", md.Consumer, "stream_sequence", md.Sequence.Stream, "attempt", md.NumDelivered)
}

// toMessage converts a JetStream message to a Watermill message.
func toMessage(stream string, jm jetstream.Msg) *message.Message {
	h := jm.Headers()
	id := MessageUUID(jm.Subject(), h.Get(nats.MsgIdHdr))
	md, mdErr := jm.Metadata()
	if id == "" {
		if mdErr == nil {
			id = stream + ":" + strconv.FormatUint(md.Sequence.Stream, 10)
		}
	}
	msg := message.NewMessage(id, jm.Data())
	for k, v := range h {
		if k == nats.MsgIdHdr || strings.HasPrefix(k, "Nats-Expected-") || len(v) == 0 {
			continue
		}
		msg.Metadata[k] = v[0]
	}
	msg.Metadata[SubjectKey] = jm.Subject()
	if mdErr == nil {
		msg.Metadata[DeliveryKey] = strconv.FormatUint(md.NumDelivered, 10)
	}
	return msg
}

// MessageUUID returns the UUID of a message stored on subject with Nats-Msg-Id msgID: msgID
// without the "<subject>:" prefix MsgID puts before it, or msgID itself when it does not start so
// (a message published by another client, whose Nats-Msg-Id is its id). Tools that read streams
// directly (the dead-letter queue, tests) use it as the subscriber does.
func MessageUUID(subject, msgID string) string {
	if id, ok := strings.CutPrefix(msgID, subject+":"); ok && id != "" {
		return id
	}
	return msgID
}

// Close stops every subscription's fetching and waits for their goroutines; messages fetched but
// not handed out are Nacked (delivered again at once), messages handed out and not yet settled are
// left to JetStream's redelivery after AckWait (their handlers may still be running). It is safe
// to call twice.
func (s *Subscriber) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.closing)
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

var _ message.Subscriber = (*Subscriber)(nil)
