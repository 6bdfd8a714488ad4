package dlq_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/dlq"
	"github.com/sagaflow/sagaflow/internal/natstest"
	"github.com/sagaflow/sagaflow/internal/protocol"
	"github.com/sagaflow/sagaflow/internal/sqlitetest"
	"github.com/sagaflow/sagaflow/participant"
)

// logBuffer collects log output written from several goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the JSON log records with message msg.
func (b *logBuffer) lines(t *testing.T, msg string) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.buf.String()), "\n") {
		if l == "" {
			continue
		}
		var rec map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &rec))
		if rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

type bundle struct {
	q    *dlq.Queue
	js   jetstream.JetStream
	logs *logBuffer
}

func setup(t *testing.T) *bundle {
	t.Helper()
	js := natstest.New(t, nil).JetStream(t)
	require.NoError(t, bus.EnsureStreams(t.Context(), js, bus.StreamsConfig{}))
	logs := &logBuffer{}
	q := dlq.New(js, dlq.Config{Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	return &bundle{q: q, js: js, logs: logs}
}

// letter is a dead letter as bus.DeadLetter stores it.
type letter struct {
	subject, sagaID, step, reason, payload string
}

// deadLetter stores l in SAGA_DLQ and returns its sequence.
func (b *bundle) deadLetter(t *testing.T, l letter) uint64 {
	t.Helper()
	h := nats.Header{}
	h[nats.MsgIdHdr] = []string{uuid.NewString()}
	h[bus.HeaderDLQReason] = []string{l.reason}
	h[bus.HeaderDLQSubject] = []string{l.subject}
	h[bus.HeaderDLQDeliveries] = []string{"5"}
	h["reason_poisoned"] = []string{l.reason}
	if l.sagaID != "" {
		h[protocol.HeaderSagaID] = []string{l.sagaID}
		h[protocol.HeaderStep] = []string{l.step}
		h[protocol.HeaderAction] = []string{"forward"}
	}
	h["traceparent"] = []string{"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
	ack, err := b.js.PublishMsg(t.Context(), &nats.Msg{Subject: bus.DLQPrefix + l.subject, Header: h, Data: []byte(l.payload)},
		jetstream.WithMsgID(h[nats.MsgIdHdr][0]))
	require.NoError(t, err)
	return ack.Sequence
}

func seqsOf(msgs []dlq.Message) []uint64 {
	out := []uint64{}
	for _, m := range msgs {
		out = append(out, m.Seq)
	}
	return out
}

// remaining returns the sequences left in SAGA_DLQ, newest first.
func (b *bundle) remaining(t *testing.T) []uint64 {
	t.Helper()
	page, err := b.q.List(t.Context(), dlq.ListParams{Limit: dlq.MaxLimit})
	require.NoError(t, err)
	return seqsOf(page.Messages)
}

func TestList(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	charge := b.deadLetter(t, letter{"saga.cmd.payments.Charge", "s1", "charge", "card declined", `{"amount":5}`})
	refund := b.deadLetter(t, letter{"saga.cmd.payments.Refund", "s2", "refund", "timeout calling bank", `{}`})
	reserve := b.deadLetter(t, letter{"saga.cmd.stock.Reserve", "s1", "reserve", "Out of Stock", `{}`})
	// The later ones are dead-lettered strictly after the earlier ones: wait for the clock to move.
	early, err := b.q.Get(ctx, reserve)
	require.NoError(t, err)
	for !time.Now().After(early.Time) {
		require.NoError(t, ctx.Err())
	}
	reply := b.deadLetter(t, letter{"saga.reply.order", "s3", "charge", "reply for unknown saga s3", `{}`})
	event := b.deadLetter(t, letter{"events.orders.created", "", "", "event is not a JSON object", `[1]`})
	late, err := b.q.Get(ctx, reply)
	require.NoError(t, err)

	tests := []struct {
		name string
		p    dlq.ListParams
		want []uint64
	}{
		{"All", dlq.ListParams{}, []uint64{event, reply, reserve, refund, charge}},
		{"SubjectExact", dlq.ListParams{Subject: "saga.cmd.payments.Charge"}, []uint64{charge}},
		{"SubjectStar", dlq.ListParams{Subject: "saga.cmd.*.Reserve"}, []uint64{reserve}},
		{"SubjectTail", dlq.ListParams{Subject: "saga.cmd.payments.>"}, []uint64{refund, charge}},
		{"SubjectAllCommands", dlq.ListParams{Subject: "saga.cmd.>"}, []uint64{reserve, refund, charge}},
		{"SubjectNone", dlq.ListParams{Subject: "saga.cmd.mail.>"}, []uint64{}},
		{"ReasonSubstringAnyCase", dlq.ListParams{Reason: "out of stock"}, []uint64{reserve}},
		{"ReasonSeveral", dlq.ListParams{Reason: "ca"}, []uint64{refund, charge}},
		{"SagaID", dlq.ListParams{SagaID: "s1"}, []uint64{reserve, charge}},
		{"SagaAndSubject", dlq.ListParams{SagaID: "s1", Subject: "saga.cmd.stock.>"}, []uint64{reserve}},
		{"Since", dlq.ListParams{Since: late.Time}, []uint64{event, reply}},
		{"Until", dlq.ListParams{Until: late.Time}, []uint64{reserve, refund, charge}},
		{"SinceAndUntil", dlq.ListParams{Since: early.Time, Until: late.Time}, []uint64{reserve}},
		{"Before", dlq.ListParams{Before: reserve}, []uint64{refund, charge}},
		{"BeforeWithFilter", dlq.ListParams{Before: reserve, SagaID: "s1"}, []uint64{charge}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			page, err := b.q.List(t.Context(), tt.p)
			require.NoError(t, err)
			require.Equal(t, tt.want, seqsOf(page.Messages))
			require.Zero(t, page.Next, "everything fits one page")
		})
	}

	t.Run("Fields", func(t *testing.T) {
		t.Parallel()
		page, err := b.q.List(t.Context(), dlq.ListParams{Subject: "saga.cmd.payments.Charge"})
		require.NoError(t, err)
		require.Len(t, page.Messages, 1)
		m := page.Messages[0]
		require.Equal(t, "saga.cmd.payments.Charge", m.Subject)
		require.Equal(t, "s1", m.SagaID)
		require.Equal(t, "charge", m.Step)
		require.Equal(t, "forward", m.Action)
		require.Equal(t, 5, m.Deliveries)
		require.Equal(t, "card declined", m.Reason)
		require.Equal(t, `{"amount":5}`, m.Payload)
		require.NotEmpty(t, m.MessageID)
		require.Nil(t, m.Headers, "a listing carries no headers")
		require.WithinDuration(t, time.Now(), m.Time, time.Hour)
	})

	t.Run("Pages", func(t *testing.T) {
		t.Parallel()
		var got []uint64
		p := dlq.ListParams{Limit: 2}
		pages := 0
		for {
			page, err := b.q.List(t.Context(), p)
			require.NoError(t, err)
			require.LessOrEqual(t, len(page.Messages), 2)
			got = append(got, seqsOf(page.Messages)...)
			pages++
			if page.Next == 0 {
				break
			}
			require.Equal(t, page.Messages[len(page.Messages)-1].Seq, page.Next)
			p.Before = page.Next
		}
		require.Equal(t, 3, pages)
		require.Equal(t, []uint64{event, reply, reserve, refund, charge}, got)
	})

	t.Run("InvalidParams", func(t *testing.T) {
		t.Parallel()
		for _, p := range []dlq.ListParams{
			{Subject: "saga..cmd"}, {Subject: "saga.>.cmd"}, {Subject: "saga.cmd x"}, {Subject: "saga.c*"},
			{Limit: dlq.MaxLimit + 1}, {Limit: -1}, {Since: late.Time, Until: early.Time},
		} {
			_, err := b.q.List(t.Context(), p)
			require.ErrorIs(t, err, dlq.ErrInvalidParams, "%+v", p)
		}
	})
}

func TestListEmpty(t *testing.T) {
	t.Parallel()
	b := setup(t)
	page, err := b.q.List(t.Context(), dlq.ListParams{})
	require.NoError(t, err)
	require.Empty(t, page.Messages)
	require.Zero(t, page.Next)
}

func TestGet(t *testing.T) {
	t.Parallel()
	b := setup(t)
	payload := strings.Repeat("é", 300) // 600 bytes of two-byte runes
	seq := b.deadLetter(t, letter{"saga.cmd.payments.Charge", "s1", "charge", strings.Repeat("r", 2000), payload})

	page, err := b.q.List(t.Context(), dlq.ListParams{})
	require.NoError(t, err)
	require.Len(t, page.Messages, 1)
	listed := page.Messages[0]
	require.True(t, listed.PayloadTruncated)
	require.Equal(t, 600, listed.PayloadSize)
	require.LessOrEqual(t, len(listed.Payload), dlq.PreviewBytes)
	require.True(t, strings.HasPrefix(payload, listed.Payload), "the preview is cut on a rune boundary")
	require.Equal(t, dlq.ReasonRunes, len([]rune(listed.Reason)))

	m, err := b.q.Get(t.Context(), seq)
	require.NoError(t, err)
	require.Equal(t, payload, m.Payload)
	require.False(t, m.PayloadTruncated)
	require.Equal(t, strings.Repeat("r", 2000), m.Reason)
	require.Equal(t, []string{"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}, m.Headers["traceparent"])
	require.Equal(t, []string{"s1"}, m.Headers[protocol.HeaderSagaID])

	_, err = b.q.Get(t.Context(), seq+100)
	require.ErrorIs(t, err, dlq.ErrNotFound)
}

// TestReplay dead-letters a command for real (its service has no handler for it), replays it once
// the handler exists, and checks the participant handles it and answers the saga.
func TestReplay(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	db := sqlitetest.New(t)
	require.NoError(t, participant.Migrate(ctx, db))
	const service = "payments"

	cmd := &protocol.Command{
		MessageID: uuid.NewString(), SagaID: "saga-1", Definition: "order", Version: 1, Step: "charge", Attempt: 1,
		Action: protocol.ActionForward, Service: service, Name: "Charge", ReplyTo: protocol.ReplySubject("order"),
		Payload: json.RawMessage(`{"input":{"amount":5},"steps":{}}`), Time: time.Now(),
	}
	pub, err := bus.NewPublisher(b.js, bus.PublisherConfig{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })

	// No handler for Charge: the participant dead-letters the command at once.
	runParticipant(t, b.js, db, service, nil, func() {
		require.NoError(t, pub.Publish(cmd.Subject(), cmd.Message()))
		waitFor(t, func() bool { return len(b.remaining(t)) == 1 })
	})
	page, err := b.q.List(ctx, dlq.ListParams{})
	require.NoError(t, err)
	dead := page.Messages[0]
	require.Equal(t, cmd.Subject(), dead.Subject)
	require.Equal(t, "saga-1", dead.SagaID)
	require.Equal(t, cmd.MessageID, dead.MessageID)
	require.Contains(t, dead.Reason, "no handler registered for command")

	replies := consume(t, b.js, bus.StreamReplies, protocol.ReplySubject("order"))
	// SAGA_COMMANDS is a work queue: the command left it when it was dead-lettered; the dead
	// letter is the only copy.

	var calls atomic.Int32
	received := make(chan participant.Command, 1) // the replayed command, as the handler sees it
	runParticipant(t, b.js, db, service, func(p *participant.Participant) {
		p.Handle("Charge", func(_ context.Context, _ *sqlx.Tx, c participant.Command) (participant.Result, error) {
			calls.Add(1)
			select {
			case received <- c:
			default:
			}
			return participant.Success(map[string]string{"charged": c.SagaID}), nil
		})
	}, func() {
		done, err := b.q.Replay(ctx, []uint64{dead.Seq}, dlq.ChangeOpts{Actor: "cli:ana", Reason: "Charge handler deployed\nv2"})
		require.NoError(t, err)
		require.Len(t, done, 1)
		require.Equal(t, dead.Seq, done[0].Seq)
		require.NotEqual(t, cmd.MessageID, done[0].NewMessageID)

		var replayed participant.Command
		select {
		case replayed = <-received:
		case <-time.After(time.Minute):
			t.Fatal("the replayed command did not reach the participant within a minute")
		}
		h := replayed.Headers
		require.Equal(t, "cli:ana", h[dlq.HeaderReplayedBy])
		require.Equal(t, `Charge handler deployed\nv2`, h[dlq.HeaderReplayedReason])
		require.Equal(t, cmd.MessageID, h[dlq.HeaderReplayedMsgID])
		require.NotEmpty(t, h[dlq.HeaderReplayedAt])
		require.Equal(t, strconvU(dead.Seq), h[dlq.HeaderReplayedFromSeq])
		require.Empty(t, h[bus.HeaderDLQReason], "the dead-letter headers are gone")
		require.Empty(t, h["reason_poisoned"])
		require.Equal(t, "saga-1", replayed.SagaID)
		require.JSONEq(t, string(cmd.Payload), string(replayed.Data))

		reply := next(t, replies)
		r, err := protocol.ParseReply(toWatermill(reply))
		require.NoError(t, err)
		require.Equal(t, "saga-1", r.SagaID)
		require.Equal(t, "charge", r.Step)
		require.Equal(t, protocol.OutcomeSuccess, r.Outcome)
		require.JSONEq(t, `{"charged":"saga-1"}`, string(r.Output))
	})
	require.Equal(t, int32(1), calls.Load())
	require.Empty(t, b.remaining(t), "the replayed message left SAGA_DLQ")
	_, err = b.q.Get(ctx, dead.Seq)
	require.ErrorIs(t, err, dlq.ErrNotFound)

	audit := b.logs.lines(t, "dlq replay")
	require.Len(t, audit, 1)
	require.Equal(t, "INFO", audit[0]["level"])
	require.Equal(t, "cli:ana", audit[0]["actor"])
	require.Equal(t, "Charge handler deployed\nv2", audit[0]["reason"])
	require.Equal(t, []any{float64(dead.Seq)}, audit[0]["seqs"])
}

func TestReplayChecks(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	ok := b.deadLetter(t, letter{"saga.cmd.payments.Charge", "s1", "charge", "card declined", `{}`})
	unknown := b.deadLetter(t, letter{"unknown", "", "", "no subject", `{}`})
	commands := consume(t, b.js, bus.StreamCommands, "saga.cmd.>")

	_, err := b.q.Replay(ctx, []uint64{ok}, dlq.ChangeOpts{Actor: "a", Reason: " "})
	require.ErrorIs(t, err, dlq.ErrReasonRequired)
	_, err = b.q.Replay(ctx, nil, dlq.ChangeOpts{Reason: "r"})
	require.ErrorIs(t, err, dlq.ErrInvalidParams)
	_, err = b.q.Replay(ctx, []uint64{ok, unknown + 10}, dlq.ChangeOpts{Reason: "r"})
	require.ErrorIs(t, err, dlq.ErrNotFound)
	_, err = b.q.Replay(ctx, []uint64{ok, unknown}, dlq.ChangeOpts{Reason: "r"})
	require.ErrorIs(t, err, dlq.ErrNotReplayable)
	require.Equal(t, []uint64{unknown, ok}, b.remaining(t), "a failed check replays nothing")

	dry, err := b.q.Replay(ctx, []uint64{ok}, dlq.ChangeOpts{Reason: "r", DryRun: true})
	require.NoError(t, err)
	require.Len(t, dry, 1)
	require.Equal(t, ok, dry[0].Seq)
	require.Equal(t, []uint64{unknown, ok}, b.remaining(t), "a dry run changes nothing")
	require.Empty(t, b.logs.lines(t, "dlq replay"), "nothing changed, nothing audited")

	// Replaying the same message twice (after a failure between publish and delete, say) goes
	// through the duplicate window: one copy.
	done, err := b.q.Replay(ctx, []uint64{ok, ok}, dlq.ChangeOpts{Reason: "r"})
	require.NoError(t, err)
	require.Len(t, done, 1)
	require.Equal(t, done[0].NewMessageID, next(t, commands).Headers().Get(nats.MsgIdHdr))
	st, err := b.js.Stream(ctx, bus.StreamCommands)
	require.NoError(t, err)
	require.Equal(t, uint64(1), st.CachedInfo().State.LastSeq, "one copy stored (the work queue removed it once read)")
	require.Equal(t, []uint64{unknown}, b.remaining(t))
	audit := b.logs.lines(t, "dlq replay")
	require.Len(t, audit, 1)
	require.Equal(t, "unknown", audit[0]["actor"])
}

func TestPurge(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	a := b.deadLetter(t, letter{"saga.cmd.payments.Charge", "s1", "charge", "card declined", `{}`})
	c := b.deadLetter(t, letter{"saga.cmd.stock.Reserve", "s2", "reserve", "out of stock", `{}`})
	d := b.deadLetter(t, letter{"saga.cmd.payments.Refund", "s3", "refund", "timeout", `{}`})
	e := b.deadLetter(t, letter{"saga.reply.order", "s4", "charge", "unknown saga", `{}`})

	_, err := b.q.Purge(ctx, []uint64{a}, dlq.ChangeOpts{})
	require.ErrorIs(t, err, dlq.ErrReasonRequired)
	_, err = b.q.Purge(ctx, []uint64{a, e + 1}, dlq.ChangeOpts{Reason: "r"})
	require.ErrorIs(t, err, dlq.ErrNotFound)

	seqs, more, err := b.q.Match(ctx, dlq.ListParams{Subject: "saga.cmd.payments.>"}, 100)
	require.NoError(t, err)
	require.False(t, more)
	require.Equal(t, []uint64{a, d}, seqs, "oldest first")
	seqs1, more, err := b.q.Match(ctx, dlq.ListParams{Subject: "saga.cmd.payments.>"}, 1)
	require.NoError(t, err)
	require.True(t, more)
	require.Equal(t, []uint64{a}, seqs1)

	dry, err := b.q.Purge(ctx, seqs, dlq.ChangeOpts{Actor: "ops", Reason: "payments replayed by hand", DryRun: true})
	require.NoError(t, err)
	require.Len(t, dry, 2)
	require.Equal(t, []uint64{e, d, c, a}, b.remaining(t))

	done, err := b.q.Purge(ctx, seqs, dlq.ChangeOpts{Actor: "ops", Reason: "payments replayed by hand"})
	require.NoError(t, err)
	require.Len(t, done, 2)
	require.Equal(t, []uint64{e, c}, b.remaining(t), "only the matching messages are gone")

	audit := b.logs.lines(t, "dlq purge")
	require.Len(t, audit, 1)
	require.Equal(t, "ops", audit[0]["actor"])
	require.Equal(t, "payments replayed by hand", audit[0]["reason"])
	require.Equal(t, []any{float64(a), float64(d)}, audit[0]["seqs"])
}

// runParticipant runs a participant of service with the handlers reg registers while fn runs.
func runParticipant(t *testing.T, js jetstream.JetStream, db *sqlx.DB, service string, reg func(*participant.Participant), fn func()) {
	t.Helper()
	p, err := participant.New(db, js, &participant.Config{Service: service})
	require.NoError(t, err)
	if reg != nil {
		reg(p)
	}
	require.NoError(t, p.Start(t.Context()))
	defer func() { require.NoError(t, p.Stop(context.Background())) }()
	fn()
}

func consume(t *testing.T, js jetstream.JetStream, stream, subject string) <-chan jetstream.Msg {
	t.Helper()
	return natstest.Consume(t, js, stream, subject)
}

func next(t *testing.T, ch <-chan jetstream.Msg) jetstream.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	select {
	case m := <-ch:
		return m
	case <-ctx.Done():
		t.Fatal("timed out waiting for a message")
		return nil
	}
}

// waitFor polls cond until it holds, for at most 30 seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		require.True(t, time.Now().Before(deadline), "condition not met within 30s")
		select {
		case <-t.Context().Done():
			t.Fatal("test ended while waiting")
		case <-time.After(20 * time.Millisecond):
		}
	}
}
