package server

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/engine"
	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/natstest"
	"github.com/sagaflow/sagaflow/internal/sqlitetest"
	"github.com/sagaflow/sagaflow/participant"
)

// TestNewStackFailsWhole shows that a stack whose participant cannot be built is not built at all:
// NewStack names the participant's problem and releases the API listener the orchestrator node
// had already bound.
func TestNewStackFailsWhole(t *testing.T) {
	t.Parallel()
	db := sqlitetest.New(t)
	require.NoError(t, engine.Migrate(t.Context(), db))
	nc := natstest.New(t, nil).Connect(t)
	ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())

	_, err = NewStack(t.Context(), StackConfig{
		Orchestrator: Config{DB: db, NATS: nc, HTTPAddr: addr},
		Participants: []ParticipantConfig{{Participant: participant.Config{Service: "svc"}, DB: db, NATS: nc}},
	})
	require.ErrorContains(t, err, "RegisterFunc")

	ln, err = (&net.ListenConfig{}).Listen(t.Context(), "tcp", addr)
	require.NoError(t, err, "the API's listener is released")
	require.NoError(t, ln.Close())
}

// TestStackRunsEveryNode runs an orchestrator node and a participant node as one stack: the API
// answers and the participant's consumer exists; both stop with the context.
func TestStackRunsEveryNode(t *testing.T) {
	t.Parallel()
	orch, svc := sqlitetest.New(t), sqlitetest.New(t)
	require.NoError(t, engine.Migrate(t.Context(), orch))
	require.NoError(t, participant.Migrate(t.Context(), svc))
	srv := natstest.New(t, nil)
	nc := srv.Connect(t)
	registered := false
	s, err := NewStack(t.Context(), StackConfig{
		Orchestrator: Config{DB: orch, NATS: nc, Orchestrator: true, Relay: true, HTTPAddr: "127.0.0.1:0"},
		Participants: []ParticipantConfig{{Participant: participant.Config{Service: "svc"}, DB: svc, NATS: nc,
			RegisterFunc: func(*participant.Participant) error { registered = true; return nil }}},
	})
	require.NoError(t, err)
	require.True(t, registered)
	require.NotEmpty(t, s.Node().Addr())

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	js := srv.JetStream(t)
	require.Eventually(t, func() bool {
		_, err := js.Consumer(t.Context(), bus.StreamCommands, participant.Durable("svc"))
		return err == nil
	}, time.Minute, 20*time.Millisecond, "the participant's consumer")
	resp, err := http.Get("http://" + s.Node().Addr() + "/healthz")
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusOK, resp.StatusCode)
	cancel()
	require.NoError(t, <-done)
}
