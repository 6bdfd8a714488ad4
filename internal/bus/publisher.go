package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
)

// SubjectKey is metadata the Subscriber sets on every message it receives: the subject the message
// arrived on (a Watermill message has no other place for it). It is set on received messages,
// never read when publishing: Publish sends every message to its topic, and, like every
// "_sagaflow_" key, it is not sent as a header.
const SubjectKey = "_sagaflow_subject"

// DeliveryKey is metadata the Subscriber sets on every message it receives: the JetStream delivery
// count, "1" on the first delivery.
const DeliveryKey = "_sagaflow_delivery"

// localPrefix starts metadata keys that are never sent as headers.
const localPrefix = "_sagaflow_"

// PublisherConfig tunes a Publisher. The zero value is usable.
type PublisherConfig struct {
	// AckTimeout is how long Publish waits, after sending the last message of a batch, for the
	// acknowledgements still missing; default 10s. Messages not acknowledged by then fail with
	// ErrAckTimeout (they may still be stored: publish them again, JetStream drops the duplicate).
	AckTimeout time.Duration
	// MaxPending is the number of messages of one Publish call in flight (sent, not yet
	// acknowledged) at once; default 1024.
	MaxPending int
	// Logger receives the recreation of a missing stream (Warn); nil discards.
	Logger *slog.Logger
	// MeterProvider receives RecreatedMetric; nil: the global provider.
	MeterProvider metric.MeterProvider
}

func (c PublisherConfig) withDefaults() PublisherConfig {
	if c.AckTimeout == 0 {
		c.AckTimeout = 10 * time.Second
	}
	if c.MaxPending == 0 {
		c.MaxPending = 1024
	}
	return c
}

func (c PublisherConfig) validate() error {
	var errs []error
	if c.AckTimeout < 0 {
		errs = append(errs, fmt.Errorf("PublisherConfig.AckTimeout %s: must not be negative", c.AckTimeout))
	}
	if c.MaxPending < 1 {
		errs = append(errs, fmt.Errorf("PublisherConfig.MaxPending %d: must be at least 1", c.MaxPending))
	}
	return errors.Join(errs...)
}

// Publisher publishes Watermill messages to JetStream, a whole batch pipelined. It is safe for
// concurrent use. It does not own js: Close does not close the connection.
//
// For js, prefer a context created with jetstream.WithPublishAsyncTimeout, so that nats.go forgets
// an acknowledgement that never comes; Publish has its own AckTimeout either way.
//
// When messages for one of Sagaflow's streams fail because no stream takes their subject (the
// stream was deleted, the JetStream store was lost), Publish recreates that stream (at most once a
// second, see RecreatedMetric) before returning the failures, so the caller's retry goes through.
type Publisher struct {
	js     jetstream.JetStream
	cfg    PublisherConfig
	closed atomic.Bool
	heal   *streamHeal

	// lookups caches, per subject, JetStream's answer to "which stream captures it" after a
	// publish found no stream, for lookupTTL, so a batch of such rows costs one API call.
	mu      sync.Mutex
	lookups map[string]lookup
}

// lookup is a cached StreamNameBySubject answer.
type lookup struct {
	err error
	at  time.Time
}

// lookupTTL is how long a stream lookup is trusted: short, so a stream created meanwhile is seen.
const lookupTTL = 2 * time.Second

// NewPublisher returns a Publisher over js. It fails on an invalid cfg.
func NewPublisher(js jetstream.JetStream, cfg PublisherConfig) (*Publisher, error) {
	if js == nil {
		return nil, errors.New("new publisher: jetstream context is nil")
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("new publisher: %w", err)
	}
	return &Publisher{js: js, cfg: cfg, heal: &streamHeal{healer: newHealer(js, cfg.Logger, cfg.MeterProvider)}, lookups: map[string]lookup{}}, nil
}

// MsgID returns the Nats-Msg-Id a Publisher gives a message with uuid published to subject:
// "<subject>:<uuid>". JetStream's duplicate window is keyed on this header per stream, so the same
// message published again to the same subject (a relay's re-publish after a crash) is dropped,
// while the same UUID published to another subject of the same stream (a Watermill forward, a
// fan-out) is a different message and is stored. A Subscriber strips the "<subject>:" prefix again
// (see Subscriber.Subscribe), so the message keeps its UUID end to end.
func MsgID(subject, uuid string) string { return subject + ":" + uuid }

// Message is one message as Sagaflow moves it from the outbox to JetStream: its subject, its id
// (Nats-Msg-Id is MsgID(Subject, ID)), its headers (sent as NATS headers, case kept) and its
// payload. Nothing travels in it that is not sent.
type Message struct {
	Subject string
	ID      string
	Headers map[string]string
	Payload []byte
}

// Publish sends msgs to topic (Watermill's message.Publisher), every one of them, with its UUID as
// ID and its metadata as headers, except "_sagaflow_" keys. See PublishBatch.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	batch := make([]Message, len(msgs))
	for i, m := range msgs {
		h := make(map[string]string, len(m.Metadata))
		for k, v := range m.Metadata {
			if !strings.HasPrefix(k, localPrefix) {
				h[k] = v
			}
		}
		batch[i] = Message{Subject: topic, ID: m.UUID, Headers: h, Payload: m.Payload}
	}
	return p.PublishBatch(context.Background(), batch)
}

// PublishBatch sends msgs to JetStream and returns when every one is acknowledged, or ctx ends,
// or AckTimeout has passed since the last was sent. Messages go out in order on one connection,
// up to MaxPending in flight (asynchronous publishes whose acknowledgements are awaited together).
// When some are not acknowledged, it returns a *PublishError listing exactly those, by index in
// msgs (use IsPermanentPublishError to tell a bad message from an outage); the others are stored.
func (p *Publisher) PublishBatch(ctx context.Context, msgs []Message) error {
	if p.closed.Load() {
		return ErrClosed
	}
	futures := make([]jetstream.PubAckFuture, len(msgs))
	var failures []MessageError
	fail := func(i int, err error) {
		failures = append(failures, MessageError{Index: i, UUID: msgs[i].ID, Subject: msgs[i].Subject, Err: err})
	}
	expired := false // the ack deadline has passed or ctx ended: only take what has already arrived
	var cause error
	wait := func(i int, timeout <-chan time.Time) {
		f := futures[i]
		if f == nil {
			return
		}
		if !expired {
			select {
			case <-f.Ok():
				return
			case err := <-f.Err():
				fail(i, err)
				return
			case <-timeout:
				expired, cause = true, ErrAckTimeout
			case <-ctx.Done():
				expired, cause = true, ctx.Err()
			}
		}
		select {
		case <-f.Ok():
		case err := <-f.Err():
			fail(i, err)
		default:
			fail(i, cause)
		}
	}
	waited := 0 // futures[:waited] are resolved
	for i, m := range msgs {
		for i-waited >= p.cfg.MaxPending {
			t := time.NewTimer(p.cfg.AckTimeout)
			wait(waited, t.C)
			t.Stop()
			waited++
		}
		if err := ctx.Err(); err != nil {
			fail(i, err)
			continue
		}
		f, err := p.js.PublishMsgAsync(natsMsg(m), jetstream.WithMsgID(MsgID(m.Subject, m.ID)))
		if err != nil {
			fail(i, err)
			continue
		}
		futures[i] = f
	}
	deadline := time.NewTimer(p.cfg.AckTimeout)
	for ; waited < len(msgs); waited++ {
		wait(waited, deadline.C)
	}
	deadline.Stop()
	for i := range failures {
		failures[i].Err = p.diagnose(failures[i].Subject, failures[i].Err)
	}
	if len(failures) > 0 {
		slices.SortFunc(failures, func(a, b MessageError) int { return a.Index - b.Index })
		p.heal.healStreams(failures)
		return &PublishError{Failures: failures}
	}
	return nil
}

// diagnose returns err, or a *NoStreamError when err is "no response from stream" and the
// message itself is at fault (noStreamIsPermanent): JetStream answers, and no stream captures the
// subject.
func (p *Publisher) diagnose(subject string, err error) error {
	if !errors.Is(err, jetstream.ErrNoStreamResponse) && !errors.Is(err, nats.ErrNoResponders) {
		return err
	}
	ns := streamsFor(p.js).Namespace
	if ns.OwnSubject(subject) {
		return err // one of ours: missing for now, recreated by whoever notices
	}
	p.mu.Lock()
	l, ok := p.lookups[subject]
	p.mu.Unlock()
	if !ok || time.Since(l.at) > lookupTTL {
		ctx, cancel := context.WithTimeout(context.Background(), p.cfg.AckTimeout)
		_, lerr := p.js.StreamNameBySubject(ctx, subject)
		cancel()
		l = lookup{err: lerr, at: time.Now()}
		p.mu.Lock()
		for s, old := range p.lookups { // keep the cache small: drop what has expired
			if time.Since(old.at) > lookupTTL {
				delete(p.lookups, s)
			}
		}
		p.lookups[subject] = l
		p.mu.Unlock()
	}
	if noStreamIsPermanent(ns, subject, l.err) {
		return &NoStreamError{Subject: subject, Err: err}
	}
	return err
}

// natsMsg converts m.
func natsMsg(m Message) *nats.Msg {
	h := make(nats.Header, len(m.Headers)+1)
	for k, v := range m.Headers {
		h[k] = []string{v}
	}
	return &nats.Msg{Subject: m.Subject, Header: h, Data: m.Payload}
}

// Close makes further Publish calls fail with ErrClosed. It is safe to call twice.
func (p *Publisher) Close() error {
	p.closed.Store(true)
	return nil
}

var _ message.Publisher = (*Publisher)(nil)
