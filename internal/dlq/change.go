package dlq

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sagaflow/sagaflow/internal/bus"
)

// Headers Replay adds to a replayed message.
const (
	// HeaderReplayedBy is the actor who replayed it.
	HeaderReplayedBy = "Sagaflow-Replayed-By"
	// HeaderReplayedAt is when (RFC 3339, UTC).
	HeaderReplayedAt = "Sagaflow-Replayed-At"
	// HeaderReplayedReason is why.
	HeaderReplayedReason = "Sagaflow-Replayed-Reason"
	// HeaderReplayedFromSeq is its sequence in SAGA_DLQ.
	HeaderReplayedFromSeq = "Sagaflow-Replayed-From-Seq"
	// HeaderReplayedMsgID is its Nats-Msg-Id before the replay.
	HeaderReplayedMsgID = "Sagaflow-Replayed-Msg-Id"
)

// replayableStreams are the subject prefixes (in the Queue's namespace) a replay may publish to: the streams whose consumers
// dead-letter.
var replayableStreams = []string{"saga.cmd.", "saga.reply.", "events."}

// ChangeOpts are the per-call options of Replay and Purge.
type ChangeOpts struct {
	// Actor is who asks (recorded in the audit line and in HeaderReplayedBy); empty: "unknown".
	Actor string
	// Reason is why; required.
	Reason string
	// DryRun checks the messages exist (and can be replayed) and returns them, changing nothing.
	DryRun bool
}

// Changed is one message Replay or Purge handled (or would, in a dry run).
type Changed struct {
	Message
	// NewMessageID is the Nats-Msg-Id of the replayed copy (Replay only).
	NewMessageID string `json:"new_message_id,omitempty"`
}

// Replay republishes the messages seqs to their original subjects with new message ids and the
// Sagaflow-Replayed-* headers, and deletes each from SAGA_DLQ once JetStream has stored its copy
// (see the package documentation). It checks every message first: an unknown sequence fails the
// call with ErrNotFound, one that cannot be replayed with ErrNotReplayable, and nothing is
// replayed. A failure midway returns the messages replayed so far with the error.
func (q *Queue) Replay(ctx context.Context, seqs []uint64, opts ChangeOpts) ([]Changed, error) {
	msgs, err := q.prepare(ctx, seqs, opts)
	if err != nil {
		return nil, err
	}
	for _, m := range msgs {
		if !q.replayable(m.Subject) {
			return nil, fmt.Errorf("%w: seq %d came from subject %q, which no Sagaflow stream captures", ErrNotReplayable, m.Seq, m.Subject)
		}
	}
	out := make([]Changed, 0, len(msgs))
	for _, m := range msgs {
		out = append(out, Changed{Message: preview(*m), NewMessageID: replayID(m)})
	}
	if opts.DryRun {
		return out, nil
	}
	st, err := q.js.Stream(ctx, q.ns.Stream(bus.StreamDLQ))
	if err != nil {
		return nil, fmt.Errorf("dlq: stream %s: %w", q.ns.Stream(bus.StreamDLQ), err)
	}
	at := q.now().UTC().Format(time.RFC3339Nano)
	done := 0
	for i, m := range msgs {
		msg := &nats.Msg{Subject: m.Subject, Header: replayHeaders(m.Headers), Data: m.raw}
		msg.Header[HeaderReplayedBy] = []string{oneLine(actorOf(opts))}
		msg.Header[HeaderReplayedAt] = []string{at}
		msg.Header[HeaderReplayedReason] = []string{oneLine(opts.Reason)}
		msg.Header[HeaderReplayedFromSeq] = []string{strconv.FormatUint(m.Seq, 10)}
		if m.MessageID != "" {
			msg.Header[HeaderReplayedMsgID] = []string{m.MessageID}
		}
		if _, err = q.js.PublishMsg(ctx, msg, jetstream.WithMsgID(out[i].NewMessageID)); err != nil {
			err = fmt.Errorf("dlq: replay seq %d to %s: %w", m.Seq, m.Subject, err)
			break
		}
		if err = st.DeleteMsg(ctx, m.Seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			err = fmt.Errorf("dlq: replayed seq %d to %s, but could not delete it (replaying it again is safe): %w", m.Seq, m.Subject, err)
			done++
			break
		}
		err = nil
		done++
	}
	q.audit(ctx, "dlq replay", opts, out[:done], err)
	return out[:done], err
}

// Purge deletes the messages seqs from SAGA_DLQ. An unknown sequence fails the call with
// ErrNotFound and nothing is deleted. A failure midway returns the messages deleted so far with
// the error.
func (q *Queue) Purge(ctx context.Context, seqs []uint64, opts ChangeOpts) ([]Changed, error) {
	msgs, err := q.prepare(ctx, seqs, opts)
	if err != nil {
		return nil, err
	}
	out := make([]Changed, 0, len(msgs))
	for _, m := range msgs {
		out = append(out, Changed{Message: preview(*m)})
	}
	if opts.DryRun {
		return out, nil
	}
	st, err := q.js.Stream(ctx, q.ns.Stream(bus.StreamDLQ))
	if err != nil {
		return nil, fmt.Errorf("dlq: stream %s: %w", q.ns.Stream(bus.StreamDLQ), err)
	}
	done := 0
	for _, m := range msgs {
		if err = st.DeleteMsg(ctx, m.Seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			err = fmt.Errorf("dlq: purge seq %d: %w", m.Seq, err)
			break
		}
		err = nil
		done++
	}
	q.audit(ctx, "dlq purge", opts, out[:done], err)
	return out[:done], err
}

// prepare checks opts and reads every message of seqs (each once, in the order given).
func (q *Queue) prepare(ctx context.Context, seqs []uint64, opts ChangeOpts) ([]*Message, error) {
	if strings.TrimSpace(opts.Reason) == "" {
		return nil, ErrReasonRequired
	}
	if len(seqs) == 0 {
		return nil, fmt.Errorf("%w: no messages selected", ErrInvalidParams)
	}
	seen := make(map[uint64]bool, len(seqs))
	msgs := make([]*Message, 0, len(seqs))
	for _, seq := range seqs {
		if seen[seq] {
			continue
		}
		seen[seq] = true
		m, err := q.Get(ctx, seq)
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, m)
	}
	return msgs, nil
}

// audit writes the one log line of a change.
func (q *Queue) audit(ctx context.Context, msg string, opts ChangeOpts, done []Changed, err error) {
	seqs := make([]uint64, len(done))
	for i, c := range done {
		seqs[i] = c.Seq
	}
	attrs := []any{"actor", actorOf(opts), "reason", opts.Reason, "seqs", seqs, "count", len(done)}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	q.log.InfoContext(ctx, msg, attrs...)
}

func actorOf(opts ChangeOpts) string {
	if opts.Actor == "" {
		return "unknown"
	}
	return opts.Actor
}

// replayID is the Nats-Msg-Id of m's replayed copy: new, and the same if the replay is repeated.
func replayID(m *Message) string {
	return fmt.Sprintf("dlq-replay-%d-%d", m.Seq, m.Time.UnixNano())
}

func (q *Queue) replayable(subject string) bool {
	for _, p := range replayableStreams {
		p = q.ns.Subject(p)
		if strings.HasPrefix(subject, p) && len(subject) > len(p) {
			return true
		}
	}
	return false
}

// replayHeaders copies h without what dead-lettering added and what the server set.
func replayHeaders(h nats.Header) nats.Header {
	out := make(nats.Header, len(h)+5)
	for k, v := range h {
		lk := strings.ToLower(k)
		if strings.HasPrefix(lk, "sagaflow-dlq-") || strings.HasPrefix(lk, "sagaflow-replayed-") ||
			strings.HasPrefix(lk, "nats-") || strings.HasSuffix(lk, "_poisoned") {
			continue
		}
		out[k] = v
	}
	return out
}

// oneLine escapes control characters (a header value is one line).
func oneLine(s string) string {
	var b strings.Builder
	for _, r := range s {
		if unicode.IsControl(r) {
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}
