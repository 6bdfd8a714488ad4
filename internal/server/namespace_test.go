package server

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/engine"
	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/dbtest"
	"github.com/sagaflow/sagaflow/internal/natstest"
	"github.com/sagaflow/sagaflow/internal/sqldb"
	"github.com/sagaflow/sagaflow/participant"
	"github.com/sagaflow/sagaflow/saga"
)

// TestNamespaces runs two installations, namespaces "a" and "b", on one NATS server: each has its
// own orchestrator database, a participant of the same service name and a definition of the same
// name. Sagas started in each (from the API and from a trigger event) complete, each participant
// receives only its own installation's commands, neither dead-letter stream gets a message, and
// the streams and consumers carry the prefixed names (and the unprefixed ones do not exist).
func TestNamespaces(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := natstest.New(t, nil)

	type installation struct {
		ns      bus.Namespace
		node    *Node
		mu      sync.Mutex
		started map[string]bool // saga ids this installation started or was triggered to start
		seen    []string        // saga ids of the commands its participant received
	}
	dialects := map[bus.Namespace]sqldb.Dialect{"a": sqldb.Postgres, "b": sqldb.SQLite}
	var insts []*installation
	for _, ns := range []bus.Namespace{"a", "b"} {
		in := &installation{ns: ns, started: map[string]bool{}}
		def, err := definitions.New("shared", 1).Trigger("events.thing.happened", "id").
			Step("only", "svc", "Do").Build()
		require.NoError(t, err)
		reg := definitions.NewRegistry()
		require.NoError(t, reg.Register(def))
		db := dbtest.Open(t, dialects[ns])
		require.NoError(t, engine.Migrate(ctx, db))
		// Each installation has its own connections: the streams' settings (and namespace) are
		// remembered per connection.
		in.node, err = New(ctx, Config{
			DB: db, NATS: srv.Connect(t), Definitions: reg, Orchestrator: true, Relay: true,
			Streams: bus.StreamsConfig{Namespace: ns},
		})
		require.NoError(t, err)
		run(t, in.node.Run)

		pdb := dbtest.Open(t, dialects[ns])
		require.NoError(t, participant.Migrate(ctx, pdb))
		p, err := participant.New(pdb, srv.JetStream(t), &participant.Config{Service: "svc", Namespace: string(ns)})
		require.NoError(t, err)
		p.Handle("Do", func(_ context.Context, _ *sqlx.Tx, c participant.Command) (participant.Result, error) {
			in.mu.Lock()
			in.seen = append(in.seen, c.SagaID)
			in.mu.Unlock()
			return participant.Success(map[string]string{"ns": string(ns)}), nil
		})
		require.NoError(t, p.Start(ctx))
		t.Cleanup(func() { require.NoError(t, p.Stop(context.Background())) })
		insts = append(insts, in)
	}

	// Each installation starts sagas with the same business keys; each is triggered once by an
	// event published to its own namespace.
	pub := srv.JetStream(t)
	for _, in := range insts {
		for _, key := range []string{"k-1", "k-2", "k-3"} {
			id, err := in.node.Engine().Start(ctx, "shared", key, json.RawMessage(`{}`), engine.StartOptions{})
			require.NoError(t, err)
			in.started[id] = true
		}
		_, err := pub.Publish(ctx, in.ns.Subject("events.thing.happened"), []byte(`{"id":"trig-`+string(in.ns)+`"}`))
		require.NoError(t, err)
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for _, in := range insts {
		trig := "trig-" + string(in.ns)
		var triggered []engine.Instance
		for len(triggered) == 0 {
			var err error
			triggered, err = in.node.Engine().List(wctx, engine.Filter{BusinessKey: trig})
			require.NoError(t, err)
			if len(triggered) == 0 {
				select {
				case <-wctx.Done():
					t.Fatalf("namespace %s: no saga started by its trigger event", in.ns)
				case <-time.After(20 * time.Millisecond):
				}
			}
		}
		require.Len(t, triggered, 1)
		in.started[triggered[0].ID] = true
		for id := range in.started {
			inst, err := in.node.Engine().Wait(wctx, id)
			require.NoError(t, err)
			require.Equal(t, saga.StatusCompleted, inst.Status, "namespace %s saga %s", in.ns, id)
			require.JSONEq(t, `{"ns":"`+string(in.ns)+`"}`, string(inst.Data.Steps["only"]), "answered by its own participant")
		}
		list, err := in.node.Engine().List(wctx, engine.Filter{Definition: "shared"})
		require.NoError(t, err)
		require.Len(t, list, 4, "namespace %s started only its own sagas", in.ns)
	}
	for _, in := range insts {
		in.mu.Lock()
		seen := append([]string(nil), in.seen...)
		in.mu.Unlock()
		require.NotEmpty(t, seen)
		for _, id := range seen {
			require.True(t, in.started[id], "participant of %s received a command of saga %s of the other installation", in.ns, id)
		}
	}

	// Names: the prefixed streams and durables exist, the unprefixed ones do not, and neither
	// dead-letter stream holds a message.
	js := srv.JetStream(t)
	for _, in := range insts {
		up := map[bus.Namespace]string{"a": "A_", "b": "B_"}[in.ns]
		for _, name := range []string{"SAGA_COMMANDS", "SAGA_REPLIES", "EVENTS", "SAGA_DLQ"} {
			st, err := js.Stream(ctx, up+name)
			require.NoError(t, err, up+name)
			require.Equal(t, []string{in.ns.Subject(map[string]string{
				"SAGA_COMMANDS": "saga.cmd.>", "SAGA_REPLIES": "saga.reply.>", "EVENTS": "events.>", "SAGA_DLQ": "saga.dlq.>",
			}[name])}, st.CachedInfo().Config.Subjects)
		}
		dlq, err := js.Stream(ctx, up+"SAGA_DLQ")
		require.NoError(t, err)
		info, err := dlq.Info(ctx)
		require.NoError(t, err)
		require.Zero(t, info.State.Msgs, "no dead letters in %s", in.ns)
		_, err = js.Consumer(ctx, up+"SAGA_REPLIES", string(in.ns)+"-sagaflow-orchestrator")
		require.NoError(t, err)
		_, err = js.Consumer(ctx, up+"SAGA_COMMANDS", string(in.ns)+"-sagaflow-participant-svc")
		require.NoError(t, err)
		_, err = js.Consumer(ctx, up+"EVENTS", string(in.ns)+"-sagaflow-trigger-shared")
		require.NoError(t, err)
	}
	for _, name := range []string{"SAGA_COMMANDS", "SAGA_REPLIES", "EVENTS", "SAGA_DLQ"} {
		_, err := js.Stream(ctx, name)
		require.True(t, errors.Is(err, jetstream.ErrStreamNotFound), "unprefixed stream %s: %v", name, err)
	}
}
