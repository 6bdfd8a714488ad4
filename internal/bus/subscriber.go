package bus

import (
	"context"
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
)

// SubscriberConfig says which durable consumer a Subscriber reads and how.
type SubscriberConfig struct {
	// Stream the consumer reads; required.
	Stream string
	// Durable names the pull consumer, shared by every replica of the service; required. It is
	// created or updated with CreateOrUpdateConsumer and never deleted by Sagaflow.
	Durable string
	// FilterSubjects restricts the consumer; default: the topic passed to Subscribe.
	FilterSubjects []string
	// AckWait is how long JetStream waits for an ack before redelivering; default 30s.
	AckWait time.Duration
	// MaxDeliver bounds deliveries of one message; default 5. Pair it with DeadLetter(pub,
	// MaxDeliver) so the last failed delivery goes to the dead-letter stream.
	MaxDeliver int
	// MaxAckPending bounds unacknowledged messages across all replicas; default 1000.
	MaxAckPending int
	// MaxInFlight is how many messages one Subscriber hands to the router without waiting for
	// their acks (the router handles them concurrently); default 64.
	MaxInFlight int
	// NakDelay delays the redelivery of a Nacked message; 0 redelivers at once.
	NakDelay time.Duration
	// Logger receives ack failures (Warn); nil discards.
	Logger *slog.Logger
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
	if c.NakDelay < 0 {
		errs = append(errs, fmt.Errorf("SubscriberConfig.NakDelay %s: must not be negative", c.NakDelay))
	}
	return errors.Join(errs...)
}

// Subscriber reads a durable JetStream pull consumer as a Watermill subscriber: explicit acks,
// Ack → double ack, Nack → nak (with NakDelay). Closing it stops fetching and never deletes the
// consumer, so a restart resumes where it left off.
type Subscriber struct {
	js  jetstream.JetStream
	cfg SubscriberConfig

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
	return &Subscriber{js: js, cfg: cfg, closing: make(chan struct{})}, nil
}

// Subscribe creates or updates the durable consumer and returns the channel of its messages, closed
// when ctx ends or the Subscriber is closed. Every message's UUID is its Nats-Msg-Id (or
// "<stream>:<sequence>" when it has none), its metadata its headers plus SubjectKey and
// DeliveryKey. The message must be Acked or Nacked; one left alone is redelivered after AckWait.
// A Subscriber reads one durable consumer: subscribe once per Subscriber (a second Subscribe with
// another topic would change the consumer's filter).
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
		Durable:       s.cfg.Durable,
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
	cons, err := s.js.CreateOrUpdateConsumer(ctx, s.cfg.Stream, cc)
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: create consumer %s on stream %s: %w", topic, s.cfg.Durable, s.cfg.Stream, err)
	}
	iter, err := cons.Messages(jetstream.PullMaxMessages(s.cfg.MaxInFlight))
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: consume %s/%s: %w", topic, s.cfg.Stream, s.cfg.Durable, err)
	}
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
		iter.Stop()
	}()
	go func() {
		defer s.wg.Done()
		defer cancel()
		s.fetch(ctx, iter, out)
	}()
	return out, nil
}

// fetch moves messages from iter to out, at most MaxInFlight unsettled at once, until ctx ends.
func (s *Subscriber) fetch(ctx context.Context, iter jetstream.MessagesContext, out chan<- *message.Message) {
	var settling sync.WaitGroup
	defer func() {
		settling.Wait()
		close(out)
	}()
	slots := make(chan struct{}, s.cfg.MaxInFlight)
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		jm, err := iter.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
				return
			}
			// Heartbeat loss and the like: the iterator keeps trying; do not spin.
			s.cfg.Logger.Warn("consume", "stream", s.cfg.Stream, "consumer", s.cfg.Durable, "err", err)
			<-slots
			select {
			case <-time.After(100 * time.Millisecond):
			case <-ctx.Done():
				return
			}
			continue
		}
		msg := toMessage(s.cfg.Stream, jm)
		msg.SetContext(ctx)
		select {
		case out <- msg:
		case <-ctx.Done():
			// Not handed out: JetStream redelivers it after AckWait.
			return
		}
		settling.Add(1)
		go func() {
			defer settling.Done()
			defer func() { <-slots }()
			s.settle(ctx, msg, jm)
		}()
	}
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
		err = jm.NakWithDelay(s.cfg.NakDelay)
	} else {
		err = jm.Nak()
	}
	if err != nil {
		s.cfg.Logger.Warn("nak", "message_id", msg.UUID, "subject", jm.Subject(), "err", err)
	}
}

// toMessage converts a JetStream message to a Watermill message.
func toMessage(stream string, jm jetstream.Msg) *message.Message {
	h := jm.Headers()
	id := h.Get(nats.MsgIdHdr)
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

// Close stops every subscription's fetching and waits for their goroutines; messages handed out and
// not yet settled are left to JetStream's redelivery. It is safe to call twice.
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
