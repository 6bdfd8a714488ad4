package engine

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/dbtest"
	"github.com/sagaflow/sagaflow/internal/protocol"
	"github.com/sagaflow/sagaflow/outbox"
	"github.com/sagaflow/sagaflow/saga"
)

func TestBusinessKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		payload string
		path    string
		want    string
		wantErr string
	}{
		{name: "TopLevelString", payload: `{"order_id":"o-1"}`, path: "order_id", want: "o-1"},
		{name: "TopLevelNumber", payload: `{"order_id":42}`, path: "order_id", want: "42"},
		{name: "DottedPath", payload: `{"output":{"flight_ref":"LH-400"}}`, path: "output.flight_ref", want: "LH-400"},
		{name: "DeepPath", payload: `{"a":{"b":{"c":7}}}`, path: "a.b.c", want: "7"},
		{name: "FieldNamedWithADotWins", payload: `{"a.b":"flat","a":{"b":"nested"}}`, path: "a.b", want: "flat"},
		{name: "MissingLeaf", payload: `{"output":{}}`, path: "output.flight_ref", wantErr: `payload has no field "output.flight_ref"`},
		{name: "MissingParent", payload: `{"x":1}`, path: "output.flight_ref", wantErr: `payload has no field "output.flight_ref"`},
		{name: "ParentNotAnObject", payload: `{"output":"s"}`, path: "output.flight_ref", wantErr: `payload has no field "output.flight_ref"`},
		{name: "Null", payload: `{"output":{"flight_ref":null}}`, path: "output.flight_ref", wantErr: "no field"},
		{name: "Empty", payload: `{"output":{"flight_ref":""}}`, path: "output.flight_ref", wantErr: "is empty"},
		{name: "Object", payload: `{"output":{"flight_ref":{}}}`, path: "output.flight_ref", wantErr: "want a string or a number"},
		{name: "NotAnObject", payload: `[1]`, path: "a", wantErr: "not a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := businessKey([]byte(tt.payload), tt.path)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				require.ErrorIs(t, err, ErrInvalidInput)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

// nextDead returns the next dead-lettered message, waiting up to 30 seconds.
func nextDead(t *testing.T, dlq jetstream.Consumer) jetstream.Msg {
	t.Helper()
	dead, err := dlq.Next(jetstream.FetchMaxWait(30 * time.Second))
	require.NoError(t, err)
	return dead
}

func TestTriggerDottedKey(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
		w := newWorld(t)
		def, err := definitions.New("booked", 1).Trigger("events.flight.booked", "output.flight_ref").
			Step("confirm", "booking", "Confirm").Build()
		require.NoError(t, err)
		e := w.startEngine(db, registry(t, def), nil)
		w.participant("booking", succeed(`{}`))
		dlq, err := w.js.OrderedConsumer(t.Context(), bus.StreamDLQ, jetstream.OrderedConsumerConfig{})
		require.NoError(t, err)

		require.NoError(t, w.pub.Publish("events.flight.booked", message.NewMessage("ev-1", []byte(`{"output":{"flight_ref":"LH-400"}}`))))
		var inst *Instance
		eventually(t, "the event starts a saga keyed by output.flight_ref", func() bool {
			inst, err = e.GetByKey(t.Context(), "booked", "LH-400")
			return err == nil
		})
		require.Equal(t, "LH-400", wait(t, e, inst.ID).BusinessKey)

		require.NoError(t, w.pub.Publish("events.flight.booked", message.NewMessage("ev-2", []byte(`{"output":{"ref":"x"}}`))))
		dead := nextDead(t, dlq)
		require.Equal(t, "saga.dlq.events.flight.booked", dead.Subject())
		require.Contains(t, dead.Headers().Get(bus.HeaderDLQReason), `"output.flight_ref"`)
		list, err := e.List(t.Context(), Filter{Definition: "booked"})
		require.NoError(t, err)
		require.Len(t, list, 1)
	})
}

// TestForgedRepliesDeadLettered publishes replies that do not match the saga they name, through
// the real bus, and checks that each lands in SAGA_DLQ with its mismatch as the reason while the
// saga stays untouched; the genuine reply then still completes it.
func TestForgedRepliesDeadLettered(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
		w := newWorld(t)
		def, err := definitions.New("trip", 2).DefaultTimeout(time.Hour).
			Step("book", "booking", "Book").Compensation("Unbook").Build()
		require.NoError(t, err)
		other, err := definitions.New("other", 1).Step("book", "booking", "Book").Build()
		require.NoError(t, err)
		e := w.startEngine(db, registry(t, def, other), nil)
		p := w.participant("booking", func(protocol.Command) *answer { return nil }) // answers by hand below
		dlq, err := w.js.OrderedConsumer(t.Context(), bus.StreamDLQ, jetstream.OrderedConsumerConfig{})
		require.NoError(t, err)

		id, err := e.Start(t.Context(), "trip", "t-1", json.RawMessage(`{}`), StartOptions{})
		require.NoError(t, err)
		eventually(t, "the command reaches the participant", func() bool { return len(p.commands()) == 1 })
		cmd := p.got[0]
		require.Equal(t, 2, cmd.Version)
		before := get(t, e, id)
		historyBefore := kinds(history(t, e, id))

		type forgery struct {
			name    string
			subject string
			edit    func(r *protocol.Reply)
			reason  string
		}
		forgeries := []forgery{
			{"SubjectOfAnotherDefinition", protocol.ReplySubject("other"), func(*protocol.Reply) {},
				`arrived on "saga.reply.other", the saga's replies go to "saga.reply.trip"`},
			{"VersionHeader", cmd.ReplyTo, func(r *protocol.Reply) { r.Version = 999 },
				"header Sagaflow-Definition-Version is 999, the saga runs version 2"},
			{"DefinitionHeader", cmd.ReplyTo, func(r *protocol.Reply) { r.Definition = "other" },
				`header Sagaflow-Definition is "other", the saga runs "trip"`},
			{"UnknownStep", cmd.ReplyTo, func(r *protocol.Reply) { r.Step = "pay" },
				`step "pay" is not a step of trip v2`},
			{"AttemptNeverSent", cmd.ReplyTo, func(r *protocol.Reply) { r.Attempt = 3 },
				`forward attempt 3 of step "book" was never sent (1 sent)`},
			{"CompensationNeverSent", cmd.ReplyTo, func(r *protocol.Reply) { r.Action = protocol.ActionCompensate },
				`compensate attempt 1 of step "book" was never sent (0 sent)`},
		}
		want := map[string]forgery{}
		for i, f := range forgeries {
			r := cmd.Answer(protocol.OutcomeSuccess)
			r.MessageID = uuid.NewSHA1(uuid.NameSpaceOID, []byte("forged:"+strconv.Itoa(i))).String()
			r.Output = json.RawMessage(`{"forged":true}`)
			f.edit(&r)
			msg, err := r.Message()
			require.NoError(t, err)
			require.NoError(t, w.pub.Publish(f.subject, msg))
			want[r.MessageID] = f
		}
		for range forgeries {
			dead := nextDead(t, dlq)
			id := bus.MessageUUID(dead.Subject(), dead.Headers().Get(protocol.HeaderMsgID))
			f, ok := want[id]
			require.True(t, ok, "unexpected dead letter %s: %s", dead.Subject(), dead.Headers().Get(bus.HeaderDLQReason))
			delete(want, id)
			reason := dead.Headers().Get(bus.HeaderDLQReason)
			require.Contains(t, reason, ErrUntrustedReply.Error(), f.name)
			require.Contains(t, reason, f.reason, f.name)
			require.Equal(t, "saga.dlq."+f.subject, dead.Subject(), f.name)
		}
		require.Empty(t, want)

		after := get(t, e, id)
		require.Equal(t, before.Status, after.Status)
		require.Equal(t, before.Steps, after.Steps)
		require.Equal(t, before.Data, after.Data, "no forged output was merged")
		require.Equal(t, historyBefore, kinds(history(t, e, id)), "nothing was recorded for the forged replies")

		p.reply(cmd, answer{outcome: protocol.OutcomeSuccess, output: `{"ref":"B-1"}`})
		done := wait(t, e, id)
		require.Equal(t, saga.StatusCompleted, done.Status)
		require.JSONEq(t, `{"ref":"B-1"}`, string(done.Data.Steps["book"]))
	})
}

func TestCheckBusinessKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		key     string
		wantErr string
		large   bool
	}{
		{name: "Empty", key: ""},
		{name: "Plain", key: "order-42"},
		{name: "SpacesAndUnicode", key: "Zürich Hbf → Genève 🚆"},
		{name: "AtTheLimit", key: strings.Repeat("é", 128)},
		{name: "OverTheLimit", key: strings.Repeat("k", 257), wantErr: "business key is 257 bytes, over the limit of 256 bytes", large: true},
		{name: "NUL", key: "a\x00", wantErr: "contains U+0000 at byte 1"},
		{name: "Newline", key: "a\nb", wantErr: "U+000A"},
		{name: "Escape", key: "\x1b[2J", wantErr: "U+001B at byte 0"},
		{name: "Delete", key: "a\x7f", wantErr: "U+007F"},
		{name: "C1Control", key: "a\u0085", wantErr: "U+0085"},
		{name: "BidiOverride", key: "abc\u202efed", wantErr: "U+202E"},
		{name: "Tab", key: "a\tb", wantErr: "U+0009"},
		{name: "InvalidUTF8", key: "a\xffb", wantErr: "not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := CheckBusinessKey(tt.key)
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tt.wantErr)
			require.ErrorIs(t, err, ErrInvalidInput)
			require.Equal(t, tt.large, errors.Is(err, ErrTooLarge))
		})
	}
}

// TestStartLimits: Start refuses, before storing anything, a saga whose command would break the
// header limit or the outbox's maximum message size, naming the limit.
func TestStartLimits(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
		def := orderDefinition(t, "order", time.Minute)
		w := outbox.NewWriter(db, &outbox.WriterConfig{MaxPayload: 4096})
		e := newEngine(t, db, Config{Definitions: registry(t, def), MaxHeaderBytes: 700, Outbox: w})

		_, err := e.Start(t.Context(), "order", strings.Repeat("k", 250), nil, StartOptions{})
		require.ErrorIs(t, err, ErrTooLarge)
		require.ErrorContains(t, err, "command headers is")
		require.ErrorContains(t, err, "over the limit of 700 bytes (Config.MaxHeaderBytes")

		_, err = e.Start(t.Context(), "order", "k", json.RawMessage(`"`+strings.Repeat("x", 4000)+`"`), StartOptions{})
		require.ErrorIs(t, err, ErrTooLarge)
		var le *LimitError
		require.ErrorAs(t, err, &le)
		require.Equal(t, 4096, le.Limit)
		require.ErrorContains(t, err, "MaxPayload")

		_, err = e.Start(t.Context(), "order", "k", nil, StartOptions{IdempotencyKey: "a\x00b"})
		require.ErrorIs(t, err, ErrInvalidInput)
		require.ErrorContains(t, err, "idempotency key contains U+0000")

		list, err := e.List(t.Context(), Filter{})
		require.NoError(t, err)
		require.Empty(t, list)
		var rows int
		require.NoError(t, db.Get(&rows, `SELECT count(*) FROM sagaflow_outbox`))
		require.Zero(t, rows)

		_, err = e.Start(t.Context(), "order", "k", nil, StartOptions{})
		require.NoError(t, err, "within the limits")
	})
}

func TestConfigLimits(t *testing.T) {
	t.Parallel()
	_, err := New(Config{DB: &sqlx.DB{}, Definitions: registry(t), MaxHeaderBytes: 70_000, MaxInputBytes: -1})
	require.ErrorContains(t, err, "MaxHeaderBytes must be 1..65535")
	require.ErrorContains(t, err, "MaxInputBytes must be >= 1")
}
