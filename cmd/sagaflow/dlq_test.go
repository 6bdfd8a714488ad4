package main

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/engine"
	"github.com/sagaflow/sagaflow/engine/httpapi"
	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/dlq"
	"github.com/sagaflow/sagaflow/internal/natstest"
	"github.com/sagaflow/sagaflow/internal/protocol"
	"github.com/sagaflow/sagaflow/internal/server"
	"github.com/sagaflow/sagaflow/internal/sqlitetest"
)

// dlqNode runs an orchestrator node's API (SQLite store, in-process NATS) and returns its URL and
// a JetStream context on its bus.
func dlqNode(t *testing.T) (string, jetstream.JetStream) {
	t.Helper()
	ns := natstest.New(t, nil)
	db := sqlitetest.New(t)
	require.NoError(t, engine.Migrate(t.Context(), db))
	node, err := server.New(t.Context(), server.Config{DB: db, NATS: ns.Connect(t), HTTPAddr: "127.0.0.1:0"})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan error, 1)
	go func() { done <- node.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return "http://" + node.Addr(), ns.JetStream(t)
}

// storeDeadLetter stores a message in SAGA_DLQ as bus.DeadLetter does and returns its sequence.
func storeDeadLetter(t *testing.T, js jetstream.JetStream, subject, sagaID, reason, payload string) uint64 {
	t.Helper()
	id := uuid.NewString()
	h := nats.Header{}
	h[nats.MsgIdHdr] = []string{id}
	h[bus.HeaderDLQReason] = []string{reason}
	h[bus.HeaderDLQSubject] = []string{subject}
	h[bus.HeaderDLQDeliveries] = []string{"5"}
	h[protocol.HeaderSagaID] = []string{sagaID}
	h[protocol.HeaderStep] = []string{"charge"}
	ack, err := js.PublishMsg(t.Context(), &nats.Msg{Subject: bus.DLQPrefix + subject, Header: h, Data: []byte(payload)}, jetstream.WithMsgID(id))
	require.NoError(t, err)
	return ack.Sequence
}

// TestDLQCommands drives sagaflow dlq list, show, replay and purge against a real node.
func TestDLQCommands(t *testing.T) {
	t.Parallel()
	api, js := dlqNode(t)
	charge := storeDeadLetter(t, js, "saga.cmd.payments.Charge", "s1", "card declined\t\x1b[31mred", `{"amount":5}`)
	reserve := storeDeadLetter(t, js, "saga.cmd.stock.Reserve", "s2", "out of stock", `{}`)
	event := storeDeadLetter(t, js, "events.orders.created", "", "not a JSON object", `not json`)

	code, stdout, stderr := runCLI(t, "dlq", "list", "--api", api)
	require.Equal(t, 0, code, stderr)
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	require.Len(t, lines, 4, stdout)
	require.Regexp(t, `^SEQ\s+TIME\s+SUBJECT\s+SAGA\s+STEP\s+DELIVERIES\s+REASON$`, lines[0])
	require.Regexp(t, fmt.Sprintf(`^%d\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+events\.orders\.created\s+-\s+charge\s+5\s+not a JSON object$`, event), lines[1])
	require.Regexp(t, fmt.Sprintf(`^%d\s+.*saga\.cmd\.stock\.Reserve\s+s2\s+charge\s+5\s+out of stock$`, reserve), lines[2])
	// The reason stays on its line and cannot colour the terminal.
	require.Regexp(t, fmt.Sprintf(`^%d\s+.*saga\.cmd\.payments\.Charge\s+s1\s+charge\s+5\s+card declined\\t\\x1b\[31mred$`, charge), lines[3])

	code, stdout, stderr = runCLI(t, "dlq", "list", "--subject", "saga.cmd.>", "--limit", "1", "--api", api)
	require.Equal(t, 0, code, stderr)
	require.Regexp(t, fmt.Sprintf(`(?m)^%d\s`, reserve), stdout)
	require.NotContains(t, stdout, "Charge")
	require.Equal(t, fmt.Sprintf("more: --before %d\n", reserve), stderr)

	code, stdout, stderr = runCLI(t, "dlq", "list", "--reason", "DECLINED", "--json", "--api", api)
	require.Equal(t, 0, code, stderr)
	var listed httpapi.DLQListResponse
	require.NoError(t, json.Unmarshal([]byte(stdout), &listed))
	require.Len(t, listed.Messages, 1)
	require.Equal(t, charge, listed.Messages[0].Seq)
	require.Equal(t, "card declined\t\x1b[31mred", listed.Messages[0].Reason, "JSON keeps the reason as it is")

	code, stdout, stderr = runCLI(t, "dlq", "show", fmt.Sprint(charge), "--api", api)
	require.Equal(t, 0, code, stderr)
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(fmt.Sprintf(`(?m)^Seq:\s+%d$`, charge)),
		regexp.MustCompile(`(?m)^Subject:\s+saga\.cmd\.payments\.Charge$`),
		regexp.MustCompile(`(?m)^Saga:\s+s1$`),
		regexp.MustCompile(`(?m)^Reason:\s+card declined\\t\\x1b\[31mred$`),
		regexp.MustCompile(`(?m)^Sagaflow-Saga-Id\s+s1$`),
		regexp.MustCompile(`(?m)^Payload \(12 bytes\):\n\{\n  "amount": 5\n\}$`),
	} {
		require.Regexp(t, want, stdout)
	}

	// Replay by filter, dry run first.
	code, stdout, stderr = runCLI(t, "dlq", "replay", "--subject", "saga.cmd.payments.>", "--reason", "bank is back", "--dry-run", "--api", api)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout, "1 message(s) would be replayed (dry run)")
	require.Regexp(t, fmt.Sprintf(`(?m)^%d\s+saga\.cmd\.payments\.Charge\s+s1\s+charge\s+dlq-replay-%d-\d+$`, charge, charge), stdout)
	code, _, stderr = runCLI(t, "dlq", "show", fmt.Sprint(charge), "--api", api)
	require.Equal(t, 0, code, "a dry run leaves the message: %s", stderr)

	commands := consumeSubject(t, js, bus.StreamCommands, "saga.cmd.>")
	code, stdout, stderr = runCLI(t, "dlq", "replay", fmt.Sprint(charge), "--reason", "bank is back", "--api", api)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout, "1 message(s) replayed")
	replayed := nextMsg(t, commands)
	require.Equal(t, "saga.cmd.payments.Charge", replayed.Subject())
	require.Regexp(t, `^cli(:\S+)?$`, replayed.Headers().Get(dlq.HeaderReplayedBy), "the CLI's actor")
	require.Equal(t, "bank is back", replayed.Headers().Get(dlq.HeaderReplayedReason))
	require.Equal(t, fmt.Sprint(charge), replayed.Headers().Get(dlq.HeaderReplayedFromSeq))
	require.JSONEq(t, `{"amount":5}`, string(replayed.Data()))

	code, _, stderr = runCLI(t, "dlq", "show", fmt.Sprint(charge), "--api", api)
	require.Equal(t, exitFailure, code)
	require.Contains(t, stderr, "not found")
	require.Contains(t, stderr, "HTTP 404")

	code, stdout, stderr = runCLI(t, "dlq", "purge", "--subject", "events.>", "--reason", "bad events, fixed upstream", "-o", "json", "--api", api)
	require.Equal(t, 0, code, stderr)
	var purged httpapi.DLQChangeResponse
	require.NoError(t, json.Unmarshal([]byte(stdout), &purged))
	require.Len(t, purged.Messages, 1)
	require.Equal(t, event, purged.Messages[0].Seq)

	code, stdout, stderr = runCLI(t, "dlq", "list", "--json", "--api", api)
	require.Equal(t, 0, code, stderr)
	require.NoError(t, json.Unmarshal([]byte(stdout), &listed))
	require.Len(t, listed.Messages, 1, "only the stock command is left")
	require.Equal(t, reserve, listed.Messages[0].Seq)

	code, _, stderr = runCLI(t, "dlq", "replay", "999", "--reason", "r", "--api", api)
	require.Equal(t, exitFailure, code)
	require.Contains(t, stderr, "seq 999")
	require.Contains(t, stderr, "HTTP 404")
}

func TestDLQUsageErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"ReplayWithoutReason", []string{"dlq", "replay", "42"}, "--reason is required"},
		{"PurgeWithoutReason", []string{"dlq", "purge", "--older-than", "24h"}, "--reason is required"},
		{"ReplayNothingSelected", []string{"dlq", "replay", "--reason", "r"}, "give the sequences to replay"},
		{"PurgeSeqsAndFilter", []string{"dlq", "purge", "42", "--subject", "events.>", "--reason", "r"}, "not both"},
		{"BadSeq", []string{"dlq", "replay", "x1", "--reason", "r"}, `"x1" is not a message sequence`},
		{"ZeroSeq", []string{"dlq", "purge", "0", "--reason", "r"}, `"0" is not a message sequence`},
		{"ShowTwo", []string{"dlq", "show", "1", "2"}, "accepts 1 arg(s)"},
		{"ShowBadSeq", []string{"dlq", "show", "-1"}, "unknown shorthand flag"},
		{"ListArgument", []string{"dlq", "list", "7"}, `unknown command "7"`},
		{"UnknownSubcommand", []string{"dlq", "bogus"}, `unknown command "bogus"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// No server (the group takes no --api): a usage error is found before any call.
			args := tt.args
			if len(args) > 1 && args[1] != "bogus" {
				args = append(args, "--api", "http://127.0.0.1:1")
			}
			code, _, stderr := runCLI(t, args...)
			require.Equal(t, exitUsage, code, stderr)
			require.Contains(t, stderr, tt.want)
			require.Contains(t, stderr, "Usage:")
		})
	}
}

func consumeSubject(t *testing.T, js jetstream.JetStream, stream, subject string) <-chan jetstream.Msg {
	t.Helper()
	return natstest.Consume(t, js, stream, subject)
}

func nextMsg(t *testing.T, ch <-chan jetstream.Msg) jetstream.Msg {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(30 * time.Second):
		t.Fatal("timed out waiting for a message")
		return nil
	}
}
