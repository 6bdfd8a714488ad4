package dlq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/protocol"
)

// Bounds of a listing.
const (
	// DefaultLimit is the page size of List when ListParams.Limit is 0.
	DefaultLimit = 50
	// MaxLimit is the largest page List returns.
	MaxLimit = 1000
	// PreviewBytes bounds the payload of a listed message (Message.Payload with PayloadTruncated).
	PreviewBytes = 256
	// ReasonRunes bounds the reason of a listed message.
	ReasonRunes = 500
)

// Config tunes a Queue. The zero value is usable.
type Config struct {
	// Namespace is the installation's namespace: the Queue reads <NS>_SAGA_DLQ on
	// <ns>.saga.dlq.>; empty (default): SAGA_DLQ on saga.dlq.>.
	Namespace bus.Namespace
	// Logger receives the audit lines of Replay and Purge (Info); nil discards them.
	Logger *slog.Logger
	// NowFunc is the clock stamped into Sagaflow-Replayed-At; nil: time.Now.
	NowFunc func() time.Time
}

// Queue reads and changes SAGA_DLQ. It is safe for concurrent use.
type Queue struct {
	ns  bus.Namespace
	js  jetstream.JetStream
	log *slog.Logger
	now func() time.Time
}

// New returns the Queue of the dead-letter stream on js.
func New(js jetstream.JetStream, cfg Config) *Queue {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.NowFunc == nil {
		cfg.NowFunc = time.Now
	}
	return &Queue{ns: cfg.Namespace, js: js, log: cfg.Logger.With("component", "dlq"), now: cfg.NowFunc}
}

// Message is one dead-lettered message.
type Message struct {
	// Seq is its sequence in SAGA_DLQ: its name for Get, Replay and Purge.
	Seq uint64 `json:"seq"`
	// Time is when it was dead-lettered (stored in SAGA_DLQ).
	Time time.Time `json:"time"`
	// Subject is the subject it arrived on and would be replayed to (Sagaflow-Dlq-Subject).
	Subject    string `json:"subject"`
	MessageID  string `json:"message_id,omitempty"`
	SagaID     string `json:"saga_id,omitempty"`
	Definition string `json:"definition,omitempty"`
	Step       string `json:"step,omitempty"`
	Action     string `json:"action,omitempty"`
	// Deliveries is how many times it was delivered before it was dead-lettered.
	Deliveries int `json:"deliveries"`
	// Reason is the handler's last error (at most ReasonRunes in a listing).
	Reason string `json:"reason"`
	// Headers are all its headers; only Get fills them.
	Headers map[string][]string `json:"headers,omitempty"`
	// Payload is its payload as text (invalid UTF-8 shown as U+FFFD), at most PreviewBytes in a
	// listing (PayloadTruncated), whole from Get.
	Payload          string `json:"payload"`
	PayloadSize      int    `json:"payload_size"`
	PayloadTruncated bool   `json:"payload_truncated,omitempty"`

	raw []byte // the payload's bytes, for Replay
}

// ListParams selects messages. The zero value selects all.
type ListParams struct {
	// Subject matches the original subject, with NATS wildcards ("saga.cmd.payments.>").
	Subject string
	// Reason matches reasons containing it, ignoring case.
	Reason string
	// SagaID matches the messages of one saga.
	SagaID string
	// Since matches messages dead-lettered at or after it; zero: no bound.
	Since time.Time
	// Until matches messages dead-lettered before it (--older-than); zero: no bound.
	Until time.Time
	// Before is List's cursor: only messages with a smaller sequence (Page.Next).
	Before uint64
	// Limit is List's page size: DefaultLimit when 0, at most MaxLimit.
	Limit int
}

func (p ListParams) validate() error {
	var errs []error
	if p.Subject != "" && !validPattern(p.Subject) {
		errs = append(errs, fmt.Errorf("subject %q: want a NATS subject, tokens separated by dots, * for one token, > at the end for the rest", p.Subject))
	}
	if p.Limit < 0 || p.Limit > MaxLimit {
		errs = append(errs, fmt.Errorf("limit %d: want 1..%d", p.Limit, MaxLimit))
	}
	if !p.Since.IsZero() && !p.Until.IsZero() && !p.Since.Before(p.Until) {
		errs = append(errs, fmt.Errorf("since %s is not before until %s", p.Since.Format(time.RFC3339), p.Until.Format(time.RFC3339)))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidParams, err)
	}
	return nil
}

// validPattern reports whether s is a subject pattern: non-empty tokens without spaces, ">" only last.
func validPattern(s string) bool {
	tokens := strings.Split(s, ".")
	for i, t := range tokens {
		if t == "" || strings.ContainsAny(t, " \t\r\n") {
			return false
		}
		if t == ">" && i != len(tokens)-1 {
			return false
		}
		if len(t) > 1 && strings.ContainsAny(t, "*>") {
			return false
		}
	}
	return true
}

// Page is a page of List, newest first.
type Page struct {
	Messages []Message `json:"messages"`
	// Next, when not 0, is ListParams.Before for the next (older) page.
	Next uint64 `json:"next,omitempty"`
}

// List returns the messages matching p, newest first, at most p.Limit of them (previews: see
// Message). It fails with ErrInvalidParams for a malformed p.
func (q *Queue) List(ctx context.Context, p ListParams) (Page, error) {
	if err := p.validate(); err != nil {
		return Page{}, err
	}
	limit := p.Limit
	if limit == 0 {
		limit = DefaultLimit
	}
	// Keep the newest limit+1 matches in a ring: the extra one says there is a next page.
	ring := make([]Message, 0, limit+1)
	n := 0 // matches seen; the newest is ring[(n-1)%len(ring)]
	err := q.scan(ctx, p, func(m Message) bool {
		if len(ring) < limit+1 {
			ring = append(ring, preview(m))
		} else {
			ring[n%len(ring)] = preview(m)
		}
		n++
		return true
	})
	if err != nil {
		return Page{}, err
	}
	page := Page{Messages: make([]Message, 0, min(n, limit))}
	for i := n - 1; i >= n-len(ring) && len(page.Messages) < limit; i-- {
		page.Messages = append(page.Messages, ring[i%len(ring)])
	}
	if n > limit {
		page.Next = page.Messages[limit-1].Seq
	}
	return page, nil
}

// Match returns the sequences of the messages matching p (p.Before applies as in List, p.Limit not),
// oldest first, no more than most of them, and whether more matched.
func (q *Queue) Match(ctx context.Context, p ListParams, most int) ([]uint64, bool, error) {
	if err := p.validate(); err != nil {
		return nil, false, err
	}
	var seqs []uint64
	more := false
	err := q.scan(ctx, p, func(m Message) bool {
		if len(seqs) == most {
			more = true
			return false
		}
		seqs = append(seqs, m.Seq)
		return true
	})
	return seqs, more, err
}

// Get returns the message seq whole, with its headers. It fails with ErrNotFound when SAGA_DLQ has
// no message seq.
func (q *Queue) Get(ctx context.Context, seq uint64) (*Message, error) {
	st, err := q.js.Stream(ctx, q.ns.Stream(bus.StreamDLQ))
	if err != nil {
		return nil, fmt.Errorf("dlq: stream %s: %w", q.ns.Stream(bus.StreamDLQ), err)
	}
	raw, err := st.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) || (err == nil && !strings.HasPrefix(raw.Subject, q.ns.Subject(bus.DLQPrefix))) {
		return nil, fmt.Errorf("%w: seq %d", ErrNotFound, seq)
	}
	if err != nil {
		return nil, fmt.Errorf("dlq: get seq %d: %w", seq, err)
	}
	m := q.toMessage(raw.Sequence, raw.Time, raw.Subject, raw.Header, raw.Data)
	m.Headers = raw.Header
	return &m, nil
}

// scan calls visit with every message matching p, oldest first, until visit returns false. It reads
// SAGA_DLQ with an ephemeral consumer filtered by subject (and start time), which it deletes.
func (q *Queue) scan(ctx context.Context, p ListParams, visit func(Message) bool) error {
	st, err := q.js.Stream(ctx, q.ns.Stream(bus.StreamDLQ))
	if err != nil {
		return fmt.Errorf("dlq: stream %s: %w", q.ns.Stream(bus.StreamDLQ), err)
	}
	state := st.CachedInfo().State
	last := state.LastSeq
	batchSize := fetchBatch(state.Bytes, state.Msgs)
	if p.Before > 0 && p.Before-1 < last {
		last = p.Before - 1
	}
	if last == 0 {
		return nil
	}
	cc := jetstream.ConsumerConfig{
		FilterSubject:     q.ns.Subject(bus.DLQPrefix) + ">",
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: time.Minute,
		MemoryStorage:     true,
		Replicas:          1,
	}
	if p.Subject != "" {
		cc.FilterSubject = q.ns.Subject(bus.DLQPrefix) + p.Subject
	}
	if !p.Since.IsZero() {
		since := p.Since
		cc.DeliverPolicy, cc.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	cons, err := st.CreateConsumer(ctx, cc)
	if err != nil {
		return fmt.Errorf("dlq: read %s: %w", q.ns.Stream(bus.StreamDLQ), err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = st.DeleteConsumer(dctx, cons.CachedInfo().Name) // else it goes after InactiveThreshold
	}()
	pending := cons.CachedInfo().NumPending
	reason := strings.ToLower(p.Reason)
	done := pending == 0
	for !done {
		batch, err := cons.FetchNoWait(int(min(pending, batchSize)))
		if err != nil {
			return fmt.Errorf("dlq: read %s: %w", q.ns.Stream(bus.StreamDLQ), err)
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			if done {
				continue // drain the batch
			}
			meta, err := msg.Metadata()
			if err != nil {
				return fmt.Errorf("dlq: read %s: %w", q.ns.Stream(bus.StreamDLQ), err)
			}
			pending = meta.NumPending
			if meta.Sequence.Stream > last || (!p.Until.IsZero() && !meta.Timestamp.Before(p.Until)) {
				done = true
				continue
			}
			m := q.toMessage(meta.Sequence.Stream, meta.Timestamp, msg.Subject(), msg.Headers(), msg.Data())
			if (p.SagaID != "" && m.SagaID != p.SagaID) || (reason != "" && !strings.Contains(strings.ToLower(m.Reason), reason)) {
				done = pending == 0
				continue
			}
			if !visit(m) {
				done = true
				continue
			}
			done = pending == 0
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("dlq: read %s: %w", q.ns.Stream(bus.StreamDLQ), err)
		}
		if got == 0 {
			done = true // the rest was deleted meanwhile
		}
	}
	return nil
}

// fetchBytes is what one fetch of scan should hold in memory: a listing keeps only previews, so
// reading a stream of 1 MB messages must not pull hundreds of them into memory at once.
const fetchBytes = 4 << 20

// fetchBatch is how many messages scan fetches at once: as many as fit in fetchBytes at the
// stream's average message size, between 1 and 256.
func fetchBatch(bytes, msgs uint64) uint64 {
	if msgs == 0 || bytes == 0 {
		return 256
	}
	return min(max(fetchBytes/(bytes/msgs+1), 1), 256)
}

// toMessage reads a stored dead letter.
func (q *Queue) toMessage(seq uint64, at time.Time, dlqSubject string, h nats.Header, data []byte) Message {
	deliveries, _ := strconv.Atoi(header(h, bus.HeaderDLQDeliveries))
	subject := header(h, bus.HeaderDLQSubject)
	if subject == "" {
		subject = strings.TrimPrefix(dlqSubject, q.ns.Subject(bus.DLQPrefix))
	}
	return Message{
		Seq:         seq,
		Time:        at.UTC(),
		Subject:     subject,
		MessageID:   bus.MessageUUID(dlqSubject, header(h, nats.MsgIdHdr)),
		SagaID:      header(h, protocol.HeaderSagaID),
		Definition:  header(h, protocol.HeaderDefinition),
		Step:        header(h, protocol.HeaderStep),
		Action:      header(h, protocol.HeaderAction),
		Deliveries:  deliveries,
		Reason:      header(h, bus.HeaderDLQReason),
		Payload:     strings.ToValidUTF8(string(data), "\uFFFD"),
		PayloadSize: len(data),
		raw:         data,
	}
}

// preview bounds a listed message: no headers, the payload and the reason cut.
func preview(m Message) Message {
	m.Headers = nil
	if len(m.Payload) > PreviewBytes {
		cut := PreviewBytes
		for cut > 0 && !utf8.RuneStart(m.Payload[cut]) {
			cut--
		}
		m.Payload, m.PayloadTruncated = m.Payload[:cut], true
	}
	if utf8.RuneCountInString(m.Reason) > ReasonRunes {
		m.Reason = string([]rune(m.Reason)[:ReasonRunes-1]) + "…"
	}
	return m
}

// header returns the first value of key in h, matching the key's case exactly first (the bus keeps
// header names as written) and then ignoring case.
func header(h nats.Header, key string) string {
	if v, ok := h[key]; ok && len(v) > 0 {
		return v[0]
	}
	for k, v := range h {
		if strings.EqualFold(k, key) && len(v) > 0 {
			return v[0]
		}
	}
	return ""
}
