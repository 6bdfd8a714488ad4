package httpapi_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/engine/httpapi"
	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/dlq"
	"github.com/sagaflow/sagaflow/internal/natstest"
	"github.com/sagaflow/sagaflow/internal/protocol"
)

// syncBuffer collects log output written from the server's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type dlqBundle struct {
	c    *httpapi.Client
	url  string
	js   jetstream.JetStream
	logs *syncBuffer
}

// setupDLQ serves the dead-letter routes over a real JetStream server's SAGA_DLQ.
func setupDLQ(t *testing.T) *dlqBundle {
	t.Helper()
	js := natstest.New(t, nil).JetStream(t)
	require.NoError(t, bus.EnsureStreams(t.Context(), js, bus.StreamsConfig{}))
	logs := &syncBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, nil))
	srv := httptest.NewServer(httpapi.DLQHandler(dlq.New(js, dlq.Config{Logger: logger}), logger))
	t.Cleanup(srv.Close)
	return &dlqBundle{c: httpapi.NewClient(srv.URL, "tester", srv.Client()), url: srv.URL, js: js, logs: logs}
}

// deadLetter stores a message in SAGA_DLQ as bus.DeadLetter does and returns its sequence.
func (b *dlqBundle) deadLetter(t *testing.T, subject, sagaID, reason string) uint64 {
	t.Helper()
	id := uuid.NewString()
	h := nats.Header{}
	h[nats.MsgIdHdr] = []string{id}
	h[bus.HeaderDLQReason] = []string{reason}
	h[bus.HeaderDLQSubject] = []string{subject}
	h[bus.HeaderDLQDeliveries] = []string{"1"}
	h[protocol.HeaderSagaID] = []string{sagaID}
	h[protocol.HeaderStep] = []string{"charge"}
	ack, err := b.js.PublishMsg(t.Context(), &nats.Msg{Subject: bus.DLQPrefix + subject, Header: h, Data: []byte(`{"n":1}`)}, jetstream.WithMsgID(id))
	require.NoError(t, err)
	return ack.Sequence
}

func (b *dlqBundle) seqs(t *testing.T, f httpapi.DLQFilter) []uint64 {
	t.Helper()
	resp, err := b.c.DLQList(t.Context(), f, 0, 1000)
	require.NoError(t, err)
	out := []uint64{}
	for _, m := range resp.Messages {
		out = append(out, m.Seq)
	}
	return out
}

func apiStatus(t *testing.T, err error) (int, string) {
	t.Helper()
	var ae *httpapi.APIError
	require.True(t, errors.As(err, &ae), "want an API error, got %v", err)
	return ae.Status, ae.Body.Code
}

func TestDLQAPI(t *testing.T) {
	t.Parallel()
	b := setupDLQ(t)
	charge := b.deadLetter(t, "saga.cmd.payments.Charge", "s1", "card declined")
	reserve := b.deadLetter(t, "saga.cmd.stock.Reserve", "s2", "Out of stock")
	reply := b.deadLetter(t, "saga.reply.order", "s1", "reply for unknown saga")

	t.Run("List", func(t *testing.T) {
		t.Parallel()
		tests := []struct {
			name string
			f    httpapi.DLQFilter
			want []uint64
		}{
			{"All", httpapi.DLQFilter{}, []uint64{reply, reserve, charge}},
			{"Subject", httpapi.DLQFilter{Subject: "saga.cmd.>"}, []uint64{reserve, charge}},
			{"Reason", httpapi.DLQFilter{Reason: "OUT OF"}, []uint64{reserve}},
			{"SagaID", httpapi.DLQFilter{SagaID: "s1"}, []uint64{reply, charge}},
			{"SinceDuration", httpapi.DLQFilter{Since: "1h"}, []uint64{reply, reserve, charge}},
			{"OlderThanDuration", httpapi.DLQFilter{OlderThan: "1h"}, []uint64{}},
			{"SinceFuture", httpapi.DLQFilter{Since: time.Now().Add(time.Hour).Format(time.RFC3339)}, []uint64{}},
			{"OlderThanFuture", httpapi.DLQFilter{OlderThan: time.Now().Add(time.Hour).Format(time.RFC3339)}, []uint64{reply, reserve, charge}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				require.Equal(t, tt.want, b.seqs(t, tt.f))
			})
		}
	})

	t.Run("Pages", func(t *testing.T) {
		t.Parallel()
		page, err := b.c.DLQList(t.Context(), httpapi.DLQFilter{}, 0, 2)
		require.NoError(t, err)
		require.Len(t, page.Messages, 2)
		require.Equal(t, reserve, page.Next)
		page, err = b.c.DLQList(t.Context(), httpapi.DLQFilter{}, page.Next, 2)
		require.NoError(t, err)
		require.Len(t, page.Messages, 1)
		require.Equal(t, charge, page.Messages[0].Seq)
		require.Zero(t, page.Next)
	})

	t.Run("Show", func(t *testing.T) {
		t.Parallel()
		m, err := b.c.DLQGet(t.Context(), charge)
		require.NoError(t, err)
		require.Equal(t, "saga.cmd.payments.Charge", m.Subject)
		require.Equal(t, "card declined", m.Reason)
		require.Equal(t, `{"n":1}`, m.Payload)
		require.Equal(t, []string{"s1"}, m.Headers[protocol.HeaderSagaID])
	})

	t.Run("BadInput", func(t *testing.T) {
		t.Parallel()
		_, err := b.c.DLQGet(t.Context(), reply+100)
		status, code := apiStatus(t, err)
		require.Equal(t, http.StatusNotFound, status)
		require.Equal(t, "not_found", code)
		for _, f := range []httpapi.DLQFilter{{Subject: "saga..x"}, {Since: "yesterday"}, {OlderThan: "-5m"}} {
			_, err := b.c.DLQList(t.Context(), f, 0, 0)
			status, _ := apiStatus(t, err)
			require.Equal(t, http.StatusBadRequest, status, "%+v: %v", f, err)
		}
		_, err = b.c.DLQList(t.Context(), httpapi.DLQFilter{}, 0, 5000)
		status, _ = apiStatus(t, err)
		require.Equal(t, http.StatusBadRequest, status)
		for _, path := range []string{"/v1/dlq/abc", "/v1/dlq/0", "/v1/dlq?before=x"} {
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, b.url+path, nil)
			require.NoError(t, err)
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			require.NoError(t, resp.Body.Close())
			require.Equal(t, http.StatusBadRequest, resp.StatusCode, path)
		}
		for _, req := range []httpapi.DLQChangeRequest{
			{Seqs: []uint64{charge}},                    // no reason
			{Reason: "r"},                               // nothing selected
			{Reason: "r", Filter: &httpapi.DLQFilter{}}, // an empty filter is not "all"
			{Reason: "r", Seqs: []uint64{charge}, Filter: &httpapi.DLQFilter{SagaID: "s1"}}, // both
			{Reason: "r", Filter: &httpapi.DLQFilter{Since: "soon"}},
		} {
			_, err := b.c.DLQPurge(t.Context(), req)
			status, _ := apiStatus(t, err)
			require.Equal(t, http.StatusBadRequest, status, "%+v: %v", req, err)
		}
		_, err = b.c.DLQReplay(t.Context(), httpapi.DLQChangeRequest{Seqs: []uint64{charge, reply + 100}, Reason: "r"})
		status, _ = apiStatus(t, err)
		require.Equal(t, http.StatusNotFound, status)
	})
	require.Equal(t, []uint64{reply, reserve, charge}, b.seqs(t, httpapi.DLQFilter{}), "nothing changed yet")
}

func TestDLQAPIReplayAndPurge(t *testing.T) {
	t.Parallel()
	b := setupDLQ(t)
	ctx := t.Context()
	charge := b.deadLetter(t, "saga.cmd.payments.Charge", "s1", "card declined")
	refund := b.deadLetter(t, "saga.cmd.payments.Refund", "s2", "bank down")
	reserve := b.deadLetter(t, "saga.cmd.stock.Reserve", "s3", "out of stock")
	lost := b.deadLetter(t, "unknown", "s4", "no subject")
	commands := natstest.Consume(t, b.js, bus.StreamCommands)

	// By filter, dry run: the payments commands, nothing moves.
	resp, err := b.c.DLQReplay(ctx, httpapi.DLQChangeRequest{Filter: &httpapi.DLQFilter{Subject: "saga.cmd.payments.>"}, Reason: "bank is back", DryRun: true})
	require.NoError(t, err)
	require.True(t, resp.DryRun)
	require.Len(t, resp.Messages, 2)
	require.Equal(t, []uint64{charge, refund}, []uint64{resp.Messages[0].Seq, resp.Messages[1].Seq})
	require.Equal(t, []uint64{lost, reserve, refund, charge}, b.seqs(t, httpapi.DLQFilter{}))

	resp, err = b.c.DLQReplay(ctx, httpapi.DLQChangeRequest{Filter: &httpapi.DLQFilter{Subject: "saga.cmd.payments.>"}, Reason: "bank is back"})
	require.NoError(t, err)
	require.False(t, resp.DryRun)
	require.Len(t, resp.Messages, 2)
	require.Equal(t, []uint64{lost, reserve}, b.seqs(t, httpapi.DLQFilter{}))
	for i, want := range []string{"saga.cmd.payments.Charge", "saga.cmd.payments.Refund"} {
		var m jetstream.Msg
		select {
		case m = <-commands:
		case <-time.After(time.Minute):
			t.Fatal("no replayed command on SAGA_COMMANDS within a minute")
		}
		require.Equal(t, want, m.Subject())
		require.Equal(t, resp.Messages[i].NewMessageID, m.Headers().Get(nats.MsgIdHdr))
		require.Equal(t, []string{"tester"}, m.Headers()[dlq.HeaderReplayedBy], "the actor of the request")
		require.Equal(t, []string{"bank is back"}, m.Headers()[dlq.HeaderReplayedReason])
	}

	_, err = b.c.DLQReplay(ctx, httpapi.DLQChangeRequest{Seqs: []uint64{lost}, Reason: "try"})
	status, code := apiStatus(t, err)
	require.Equal(t, http.StatusConflict, status)
	require.Equal(t, "conflict", code)

	// A filter that matches nothing does nothing.
	resp, err = b.c.DLQPurge(ctx, httpapi.DLQChangeRequest{Filter: &httpapi.DLQFilter{SagaID: "nobody"}, Reason: "cleanup"})
	require.NoError(t, err)
	require.Empty(t, resp.Messages)

	resp, err = b.c.DLQPurge(ctx, httpapi.DLQChangeRequest{Seqs: []uint64{lost}, Reason: "no subject, nothing to do"})
	require.NoError(t, err)
	require.Len(t, resp.Messages, 1)
	require.Equal(t, []uint64{reserve}, b.seqs(t, httpapi.DLQFilter{}), "only the purged message is gone")

	var audit []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.logs.String()), "\n") {
		var rec map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &rec))
		if rec["msg"] == "dlq replay" || rec["msg"] == "dlq purge" {
			audit = append(audit, rec)
		}
	}
	require.Len(t, audit, 2, "one line per change; dry runs and refusals change nothing")
	require.Equal(t, "dlq replay", audit[0]["msg"])
	require.Equal(t, "tester", audit[0]["actor"])
	require.Equal(t, "bank is back", audit[0]["reason"])
	require.Equal(t, []any{float64(charge), float64(refund)}, audit[0]["seqs"])
	require.Equal(t, "dlq purge", audit[1]["msg"])
	require.Equal(t, []any{float64(lost)}, audit[1]["seqs"])
}
