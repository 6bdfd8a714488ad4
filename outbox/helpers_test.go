package outbox_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/natstest"
	"github.com/sagaflow/sagaflow/internal/sqldb"
	"github.com/sagaflow/sagaflow/outbox"
)

// bundle is what a relay test works with.
type bundle struct {
	db     *sqlx.DB
	nats   *natstest.Server
	js     jetstream.JetStream
	writer *outbox.Writer
}

// setup migrates db, starts a JetStream server with Sagaflow's streams and returns the pieces.
func setup(t *testing.T, db *sqlx.DB, opts *natstest.Opts) *bundle {
	t.Helper()
	require.NoError(t, outbox.Migrate(t.Context(), db))
	srv := natstest.New(t, opts)
	js := srv.JetStream(t)
	require.NoError(t, bus.EnsureStreams(t.Context(), js, bus.StreamsConfig{}))
	return &bundle{db: db, nats: srv, js: js, writer: outbox.NewWriter(db, nil)}
}

// startRelay runs a relay until the test ends.
func startRelay(t *testing.T, db *sqlx.DB, js jetstream.JetStream, cfg outbox.RelayConfig) *outbox.Relay {
	t.Helper()
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 50 * time.Millisecond
	}
	r := outbox.NewRelay(db, js, &cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return r
}

// write commits msgs to subject in one transaction.
func (b *bundle) write(t *testing.T, subject string, msgs ...*message.Message) {
	t.Helper()
	require.NoError(t, sqldb.InTx(t.Context(), b.db, func(tx *sqlx.Tx) error {
		return b.writer.Write(t.Context(), tx, subject, msgs...)
	}))
}

// streamMsg is a message read back from a stream.
type streamMsg struct {
	id      string
	subject string
	data    string
	headers map[string][]string
}

// readStream returns every message of stream whose subject matches filter, in stream order, once
// the stream holds at least want of them (waiting until the test's deadline).
func readStream(t *testing.T, js jetstream.JetStream, stream, filter string, want int) []streamMsg {
	t.Helper()
	ctx := t.Context()
	waitFor(t, fmt.Sprintf("%d messages on %s in %s", want, filter, stream), func() bool {
		st, err := js.Stream(ctx, stream)
		if err != nil {
			return false
		}
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(filter))
		if err != nil {
			return false
		}
		var n uint64
		for _, c := range info.State.Subjects {
			n += c
		}
		return n >= uint64(want)
	})
	// An explicit-ack consumer, which the work-queue streams (SAGA_COMMANDS, SAGA_REPLIES) require
	// and the others accept. Nothing is acked, so nothing is removed; the ack wait outlasts the
	// read, so nothing is delivered twice, and nothing caps the messages pending.
	cons, err := js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{AckPolicy: jetstream.AckExplicitPolicy,
		FilterSubject: filter, InactiveThreshold: time.Minute, AckWait: time.Hour, MaxAckPending: -1})
	require.NoError(t, err)
	t.Cleanup(func() { _ = js.DeleteConsumer(context.Background(), stream, cons.CachedInfo().Name) })
	info, err := cons.Info(ctx)
	require.NoError(t, err)
	total := int(info.NumPending)
	var out []streamMsg
	for len(out) < total {
		batch, err := cons.Fetch(min(total-len(out), 1000), jetstream.FetchMaxWait(5*time.Second))
		require.NoError(t, err)
		for m := range batch.Messages() {
			// The relay publishes with Nats-Msg-Id "<subject>:<message id>" (bus.MsgID).
			id, ok := strings.CutPrefix(m.Headers().Get("Nats-Msg-Id"), m.Subject()+":")
			require.True(t, ok, "Nats-Msg-Id %q of a message on %s", m.Headers().Get("Nats-Msg-Id"), m.Subject())
			out = append(out, streamMsg{id: id, subject: m.Subject(), data: string(m.Data()), headers: m.Headers()})
		}
		require.NoError(t, batch.Error())
	}
	return out
}

// requireExactlyOnce checks that msgs hold each id of want exactly once and nothing else.
func requireExactlyOnce(t *testing.T, want map[string]bool, msgs []streamMsg) {
	t.Helper()
	seen := make(map[string]int, len(msgs))
	for _, m := range msgs {
		seen[m.id]++
	}
	var dup, extra, missing int
	for id, n := range seen {
		if n > 1 {
			dup++
		}
		if !want[id] {
			extra++
		}
	}
	for id := range want {
		if seen[id] == 0 {
			missing++
		}
	}
	require.Zero(t, dup, "message ids delivered more than once")
	require.Zero(t, extra, "messages that were never committed")
	require.Zero(t, missing, "committed messages that never arrived")
	require.Len(t, msgs, len(want))
}

// waitFor polls cond every 20ms until it holds or the test's context ends.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-t.Context().Done():
			t.Fatalf("gave up waiting for %s", what)
		case <-tick.C:
		}
	}
}

// waitDrained waits until the outbox has no unpublished, unquarantined row.
func waitDrained(t *testing.T, r *outbox.Relay) {
	t.Helper()
	waitFor(t, "an empty outbox backlog", func() bool {
		st, err := r.Stats(t.Context())
		return err == nil && st.Backlog == 0
	})
}

// idSet collects message ids safely from several goroutines.
type idSet struct {
	mu  sync.Mutex
	ids map[string]bool
}

func (s *idSet) add(ids ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ids == nil {
		s.ids = map[string]bool{}
	}
	for _, id := range ids {
		s.ids[id] = true
	}
}
