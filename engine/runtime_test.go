package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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
	"github.com/sagaflow/sagaflow/internal/natstest"
	"github.com/sagaflow/sagaflow/internal/pgtest"
	"github.com/sagaflow/sagaflow/internal/protocol"
	"github.com/sagaflow/sagaflow/outbox"
	"github.com/sagaflow/sagaflow/saga"
)

// world is a real JetStream server with Sagaflow's streams, shared by the engines and test
// participants of one test.
type world struct {
	t   testing.TB
	srv *natstest.Server
	js  jetstream.JetStream
	pub *bus.Publisher
}

// dedupWindow is the streams' duplicate window in these tests: short, so that a test can deliver
// the same message id twice by publishing it again after the window.
const dedupWindow = 100 * time.Millisecond

func newWorld(t testing.TB) *world {
	t.Helper()
	srv := natstest.New(t, nil)
	js := srv.JetStream(t)
	require.NoError(t, bus.EnsureStreams(t.Context(), js, bus.StreamsConfig{Duplicates: dedupWindow}))
	pub, err := bus.NewPublisher(js, bus.PublisherConfig{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	return &world{t: t, srv: srv, js: js, pub: pub}
}

// run runs fn until the test ends; the cleanup cancels it and waits for it, failing the test if it
// returned an error.
func run(t testing.TB, name string, fn func(ctx context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s: %v", name, err)
		}
	})
}

// startEngine migrates db, runs an outbox relay and an Engine on it, and returns the Engine.
func (w *world) startEngine(db *sqlx.DB, defs *definitions.Registry, commits *atomic.Int64) *Engine {
	t := w.t
	t.Helper()
	relay := outbox.NewRelay(db, w.js, &outbox.RelayConfig{PollInterval: 20 * time.Millisecond})
	e := newEngine(t, db, Config{
		JetStream:     w.js,
		Definitions:   defs,
		TimerInterval: 50 * time.Millisecond,
		MaxDeliver:    3,
		OnCommit: func() {
			if commits != nil {
				commits.Add(1)
			}
			relay.Wake()
		},
	})
	run(t, "relay", relay.Run)
	run(t, "engine", e.Run)
	return e
}

// answer is what a test participant replies; a nil *answer means no reply at all.
type answer struct {
	outcome protocol.Outcome
	output  string
	reason  string
}

// participant is a minimal saga participant written with the bus and the protocol only: it reads
// the commands of one service and answers each as its function decides. It keeps every command it
// received.
type participant struct {
	w       *world
	mu      sync.Mutex
	got     []protocol.Command
	decide  func(cmd protocol.Command) *answer
	repeats int // extra copies of each reply, published after the dedup window
	// concurrent handles commands concurrently (benchmarks), not in arrival order.
	concurrent bool
}

func (w *world) participant(service string, decide func(cmd protocol.Command) *answer) *participant {
	return w.participantWith(&participant{w: w, decide: decide}, service)
}

func (w *world) participantWith(p *participant, service string) *participant {
	t := w.t
	t.Helper()
	sub, err := bus.NewSubscriber(w.js, bus.SubscriberConfig{
		Stream: bus.StreamCommands, Durable: "test-" + service, FilterSubjects: []string{protocol.ServiceCommands(service)},
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	msgs, err := sub.Subscribe(ctx, protocol.ServiceCommands(service))
	require.NoError(t, err)
	var wg sync.WaitGroup
	wg.Go(func() {
		for msg := range msgs {
			if p.concurrent {
				wg.Go(func() { p.handle(msg) })
				continue
			}
			p.handle(msg)
		}
	})
	t.Cleanup(func() {
		cancel()
		_ = sub.Close()
		wg.Wait()
	})
	return p
}

func (p *participant) handle(msg *message.Message) {
	cmd, err := protocol.ParseCommand(msg.Metadata.Get(bus.SubjectKey), msg)
	if err != nil {
		p.w.t.Errorf("participant: %v", err)
		msg.Ack()
		return
	}
	p.mu.Lock()
	p.got = append(p.got, cmd)
	p.mu.Unlock()
	if a := p.decide(cmd); a != nil {
		p.reply(cmd, *a)
	}
	msg.Ack()
}

// reply publishes the answer to cmd; its message id is derived from the command's, as a
// participant's barrier would replay it.
func (p *participant) reply(cmd protocol.Command, a answer) {
	r := cmd.Answer(a.outcome)
	r.MessageID = uuid.NewSHA1(uuid.NameSpaceOID, []byte("reply:"+cmd.MessageID)).String()
	r.Reason = a.reason
	if a.output != "" {
		r.Output = json.RawMessage(a.output)
	}
	r.Time = time.Now()
	for i := 0; i <= p.repeats; i++ {
		if i > 0 {
			time.Sleep(2 * dedupWindow) // past JetStream's duplicate window: delivered again
		}
		msg, err := r.Message()
		if err != nil {
			p.w.t.Errorf("participant: %v", err)
			return
		}
		if err := p.w.pub.Publish(cmd.ReplyTo, msg); err != nil {
			p.w.t.Errorf("participant: publish reply: %v", err)
		}
	}
}

// commands returns the "Command attempt" of every command received, in order.
func (p *participant) commands() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, len(p.got))
	for i, c := range p.got {
		out[i] = fmt.Sprintf("%s %d", c.Name, c.Attempt)
	}
	return out
}

func succeed(output string) func(protocol.Command) *answer {
	return func(protocol.Command) *answer { return &answer{outcome: protocol.OutcomeSuccess, output: output} }
}

// wait waits for saga id to finish, for at most a minute.
func wait(t *testing.T, e *Engine, id string) *Instance {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	inst, err := e.Wait(ctx, id)
	require.NoError(t, err)
	return inst
}

// eventually polls cond every 10ms until it holds, failing the test after a minute.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRuntime runs sagas end to end: Engine.Run, the outbox relay, a real JetStream and small
// test participants, on PostgreSQL and on SQLite.
func TestRuntime(t *testing.T) {
	t.Parallel()

	t.Run("SequentialSuccess", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			w := newWorld(t)
			e := w.startEngine(db, registry(t, orderDefinition(t, "order", 30*time.Second)), nil)
			order := w.participant("order", succeed(`{"order_id":"o-1"}`))
			inventory := w.participant("inventory", succeed(`{"reserved":3}`))
			var payloads sync.Map
			w.participant("payment", func(cmd protocol.Command) *answer {
				payloads.Store(cmd.Step, string(cmd.Payload))
				return &answer{outcome: protocol.OutcomeSuccess, output: `{"charge_id":"c-9"}`}
			})
			id, err := e.Start(t.Context(), "order", "o-1", json.RawMessage(`{"amount":12}`), StartOptions{})
			require.NoError(t, err)
			inst := wait(t, e, id)
			require.Equal(t, saga.StatusCompleted, inst.Status)
			require.JSONEq(t, `{"order_id":"o-1"}`, string(inst.Data.Steps["create-order"]))
			require.JSONEq(t, `{"reserved":3}`, string(inst.Data.Steps["reserve-inventory"]))
			require.JSONEq(t, `{"charge_id":"c-9"}`, string(inst.Data.Steps["charge-payment"]))
			// A command carries the outputs of the steps before it.
			p, _ := payloads.Load("charge-payment")
			require.JSONEq(t, `{"input":{"amount":12},"steps":{"create-order":{"order_id":"o-1"},"reserve-inventory":{"reserved":3}}}`, p.(string))
			require.Equal(t, []string{"CreateOrder 1"}, order.commands())
			require.Equal(t, []string{"ReserveInventory 1"}, inventory.commands())
			require.Equal(t, []string{
				"started",
				"command create-order 1 forward", "reply create-order 1 forward success",
				"command reserve-inventory 1 forward", "reply reserve-inventory 1 forward success",
				"command charge-payment 1 forward", "reply charge-payment 1 forward success",
				"finished completed",
			}, kinds(history(t, e, id)))
		})
	})

	t.Run("BusinessFailureCompensatesInReverse", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			w := newWorld(t)
			e := w.startEngine(db, registry(t, orderDefinition(t, "order", 30*time.Second)), nil)
			var mu sync.Mutex
			var compensations []string
			compensate := func(output string) func(protocol.Command) *answer {
				return func(cmd protocol.Command) *answer {
					if cmd.Action == protocol.ActionCompensate {
						mu.Lock()
						compensations = append(compensations, cmd.Name)
						mu.Unlock()
					}
					return &answer{outcome: protocol.OutcomeSuccess, output: output}
				}
			}
			w.participant("order", compensate(`{}`))
			w.participant("inventory", compensate(`{}`))
			payment := w.participant("payment", func(protocol.Command) *answer {
				return &answer{outcome: protocol.OutcomeFailure, reason: "card declined"}
			})
			id, err := e.Start(t.Context(), "order", "o-2", nil, StartOptions{})
			require.NoError(t, err)
			inst := wait(t, e, id)
			require.Equal(t, saga.StatusCompensated, inst.Status)
			require.Contains(t, inst.LastError, "card declined")
			mu.Lock()
			require.Equal(t, []string{"ReleaseInventory", "CancelOrder"}, compensations, "reverse order")
			mu.Unlock()
			require.Equal(t, []string{"ChargePayment 1"}, payment.commands(), "a failed step is not compensated")
		})
	})

	t.Run("TimeoutRetriesThenCompensates", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			w := newWorld(t)
			e := w.startEngine(db, registry(t, orderDefinition(t, "order", 300*time.Millisecond)), nil)
			w.participant("order", succeed(`{}`))
			var late atomic.Pointer[protocol.Command]
			inventory := w.participant("inventory", func(cmd protocol.Command) *answer {
				if cmd.Action == protocol.ActionForward {
					late.Store(&cmd) // the service is down: no answer
					return nil
				}
				return &answer{outcome: protocol.OutcomeSuccess}
			})
			id, err := e.Start(t.Context(), "order", "o-3", nil, StartOptions{})
			require.NoError(t, err)
			inst := wait(t, e, id)
			require.Equal(t, saga.StatusCompensated, inst.Status)
			// Two attempts, then the step itself is compensated (its outcome is unknown).
			require.Equal(t, []string{"ReserveInventory 1", "ReserveInventory 2", "ReleaseInventory 1"}, inventory.commands())

			// The service comes back and answers its last command: recorded, ignored.
			inventory.reply(*late.Load(), answer{outcome: protocol.OutcomeSuccess, output: `{}`})
			eventually(t, "late reply recorded", func() bool {
				h := history(t, e, id)
				return h[len(h)-1].Kind == HistoryIgnored
			})
			h := history(t, e, id)
			last := h[len(h)-1]
			require.Equal(t, "reserve-inventory", last.Step)
			require.Equal(t, 2, last.Attempt)
			require.Contains(t, string(last.Detail), "finished")
			require.Equal(t, saga.StatusCompensated, get(t, e, id).Status)
			require.Contains(t, kinds(h), "timeout reserve-inventory 1 forward")
			require.Contains(t, kinds(h), "timeout reserve-inventory 2 forward")
		})
	})

	t.Run("DuplicateRepliesApplyOnce", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			w := newWorld(t)
			e := w.startEngine(db, registry(t, orderDefinition(t, "order", 30*time.Second)), nil)
			for _, svc := range []string{"order", "inventory", "payment"} {
				w.participant(svc, succeed(`{}`)).repeats = 1 // every reply delivered twice
			}
			id, err := e.Start(t.Context(), "order", "o-4", nil, StartOptions{})
			require.NoError(t, err)
			require.Equal(t, saga.StatusCompleted, wait(t, e, id).Status)
			eventually(t, "every duplicate recorded", func() bool {
				n := 0
				for _, h := range history(t, e, id) {
					if h.Kind == HistoryIgnored {
						n++
					}
				}
				return n == 3
			})
			replies := map[string]int{}
			for _, h := range history(t, e, id) {
				switch h.Kind {
				case HistoryReply:
					replies[h.Step]++
				case HistoryIgnored:
					require.Contains(t, string(h.Detail), "duplicate")
				}
			}
			require.Equal(t, map[string]int{"create-order": 1, "reserve-inventory": 1, "charge-payment": 1}, replies)
		})
	})

	t.Run("Trigger", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			w := newWorld(t)
			def, err := definitions.New("placed", 1).Trigger("events.order.placed", "order_id").
				Step("create-order", "order", "CreateOrder").Build()
			require.NoError(t, err)
			e := w.startEngine(db, registry(t, def), nil)
			w.participant("order", succeed(`{}`))
			publish := func(id, payload string) {
				msg := message.NewMessage(id, []byte(payload))
				require.NoError(t, w.pub.Publish("events.order.placed", msg))
			}
			publish("event-1", `{"order_id":"o-5","total":3}`)
			var inst *Instance
			eventually(t, "the event starts a saga", func() bool {
				inst, err = e.GetByKey(t.Context(), "placed", "o-5")
				return err == nil
			})
			inst = wait(t, e, inst.ID)
			require.Equal(t, saga.StatusCompleted, inst.Status)
			require.JSONEq(t, `{"order_id":"o-5","total":3}`, string(inst.Data.Input))
			require.Equal(t, "event-1", inst.IdempotencyKey)
			require.Equal(t, "trigger events.order.placed", history(t, e, inst.ID)[0].Actor)

			// The same event again, past the duplicate window: still one instance.
			time.Sleep(2 * dedupWindow)
			publish("event-1", `{"order_id":"o-5","total":3}`)
			// A bad event goes to the dead-letter stream with its reason.
			publish("event-2", `{"total":3}`)
			dlq, err := w.js.OrderedConsumer(t.Context(), bus.StreamDLQ, jetstream.OrderedConsumerConfig{})
			require.NoError(t, err)
			dead, err := dlq.Next(jetstream.FetchMaxWait(30 * time.Second))
			require.NoError(t, err)
			require.Equal(t, "saga.dlq.events.order.placed", dead.Subject())
			require.Contains(t, dead.Headers().Get(bus.HeaderDLQReason), "order_id")
			// The redelivered event-1 was handled before event-2 (same consumer, in order).
			eventually(t, "the trigger consumer caught up", func() bool {
				info, err := w.js.Consumer(t.Context(), bus.StreamEvents, "sagaflow-trigger-placed")
				require.NoError(t, err)
				ci, err := info.Info(t.Context())
				require.NoError(t, err)
				return ci.NumAckPending == 0 && ci.NumPending == 0
			})
			list, err := e.List(t.Context(), Filter{Definition: "placed"})
			require.NoError(t, err)
			require.Len(t, list, 1)
		})
	})

	t.Run("Cancel", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			w := newWorld(t)
			e := w.startEngine(db, registry(t, orderDefinition(t, "order", time.Minute)), nil)
			order := w.participant("order", succeed(`{}`))
			inventory := w.participant("inventory", func(cmd protocol.Command) *answer {
				if cmd.Action == protocol.ActionForward {
					return nil // hangs until cancelled
				}
				return &answer{outcome: protocol.OutcomeSuccess}
			})
			id, err := e.Start(t.Context(), "order", "o-6", nil, StartOptions{})
			require.NoError(t, err)
			eventually(t, "inventory command sent", func() bool { return len(inventory.commands()) == 1 })
			require.NoError(t, e.Cancel(t.Context(), id, "alice", "customer asked"))
			inst := wait(t, e, id)
			require.Equal(t, saga.StatusCompensated, inst.Status)
			require.Equal(t, []string{"ReserveInventory 1", "ReleaseInventory 1"}, inventory.commands())
			require.Equal(t, []string{"CreateOrder 1", "CancelOrder 1"}, order.commands())
			h := history(t, e, id)
			require.Contains(t, kinds(h), "cancel")
			for _, entry := range h {
				if entry.Kind == HistoryCancel {
					require.Equal(t, "alice", entry.Actor)
				}
			}
		})
	})

	t.Run("RedriveFailed", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			w := newWorld(t)
			e := w.startEngine(db, registry(t, orderDefinition(t, "order", 2*time.Second)), nil)
			var broken atomic.Bool
			broken.Store(true)
			w.participant("order", func(cmd protocol.Command) *answer {
				if cmd.Action == protocol.ActionCompensate && broken.Load() {
					return &answer{outcome: protocol.OutcomeFailure, reason: "order service bug"}
				}
				return &answer{outcome: protocol.OutcomeSuccess}
			})
			w.participant("inventory", func(protocol.Command) *answer {
				return &answer{outcome: protocol.OutcomeFailure, reason: "out of stock"}
			})
			id, err := e.Start(t.Context(), "order", "o-7", nil, StartOptions{})
			require.NoError(t, err)
			inst := wait(t, e, id)
			require.Equal(t, saga.StatusFailed, inst.Status)
			require.Contains(t, inst.LastError, "order service bug")

			broken.Store(false)
			require.NoError(t, e.Redrive(t.Context(), id, "bob", "order service fixed"))
			inst = wait(t, e, id)
			require.Equal(t, saga.StatusCompensated, inst.Status)
			require.Equal(t, saga.StepCompensated, inst.Steps[0].Status)
			require.Equal(t, 3, inst.Steps[0].CompensationAttempts, "two failed, one after the redrive")
			var redrive *HistoryEntry
			h := history(t, e, id)
			for i := range h {
				if h[i].Kind == HistoryRedrive {
					redrive = &h[i]
				}
			}
			require.NotNil(t, redrive)
			require.Equal(t, "bob", redrive.Actor)
		})
	})

	t.Run("MalformedReplyDeadLettered", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			w := newWorld(t)
			w.startEngine(db, registry(t, orderDefinition(t, "order", time.Minute)), nil)
			msg := message.NewMessage("bad-reply", []byte(`{}`)) // no saga headers at all
			require.NoError(t, w.pub.Publish("saga.reply.order", msg))
			dlq, err := w.js.OrderedConsumer(t.Context(), bus.StreamDLQ, jetstream.OrderedConsumerConfig{})
			require.NoError(t, err)
			dead, err := dlq.Next(jetstream.FetchMaxWait(30 * time.Second))
			require.NoError(t, err)
			require.Equal(t, "saga.dlq.saga.reply.order", dead.Subject())
			require.Contains(t, dead.Headers().Get(bus.HeaderDLQReason), protocol.HeaderSagaID)
		})
	})
}

// TestReplicas runs two Engines on one database and one bus: 200 sagas complete, both replicas
// work, and no transition is applied twice.
func TestReplicas(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
		w := newWorld(t)
		// The test is about sharing work, not timeouts: a step deadline no busy machine reaches
		// (at load 30 on 2 cores a reply once took over 30 s on SQLite, and the retry it caused
		// broke the exact counts below).
		defs := registry(t, orderDefinition(t, "order", 10*time.Minute))
		var commitsA, commitsB atomic.Int64
		a := w.startEngine(db, defs, &commitsA)
		b := w.startEngine(db, defs, &commitsB)
		for _, svc := range []string{"order", "inventory", "payment"} {
			w.participant(svc, succeed(`{"ok":true}`))
		}
		const n = 200
		ids := make([]string, n)
		var wg sync.WaitGroup
		var errs atomic.Int64
		sem := make(chan struct{}, 16)
		for i := range n {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				starter := a
				if i%2 == 1 {
					starter = b
				}
				id, err := starter.Start(t.Context(), "order", fmt.Sprintf("o-%d", i), nil, StartOptions{})
				if err != nil {
					t.Errorf("start %d: %v", i, err)
					errs.Add(1)
				}
				ids[i] = id
			})
		}
		wg.Wait()
		require.Zero(t, errs.Load())
		for _, id := range ids {
			require.Equal(t, saga.StatusCompleted, wait(t, a, id).Status)
		}
		for _, id := range ids {
			seen := map[string]bool{}
			for _, h := range history(t, a, id) {
				if h.Kind == HistoryIgnored {
					continue
				}
				key := strings.Join([]string{string(h.Kind), h.Step, itoa(h.Attempt), h.Action}, " ")
				require.False(t, seen[key], "saga %s: %q recorded twice", id, key)
				seen[key] = true
			}
			require.Len(t, seen, 8, "saga %s", id)
		}
		var rows int
		require.NoError(t, db.Get(&rows, `SELECT COUNT(*) FROM sagaflow_history WHERE kind = 'reply'`))
		require.Equal(t, 3*n, rows)
		// Both replicas committed transitions beyond their own starts.
		require.Greater(t, commitsA.Load(), int64(n/2))
		require.Greater(t, commitsB.Load(), int64(n/2))
	})
}

// TestTimersWokenByNotify checks the PostgreSQL wake-up across replicas: replica B (not running)
// starts a saga whose step times out soon; replica A, whose fallback poll is an hour, fires the
// timeout only because B's transaction sent a NOTIFY that A LISTENs for.
func TestTimersWokenByNotify(t *testing.T) {
	t.Parallel()
	dsn := pgtest.SchemaDSN(t)
	open := func() *sqlx.DB {
		db, err := sqlx.Open("postgres", dsn)
		require.NoError(t, err)
		t.Cleanup(func() { _ = db.Close() })
		return db
	}
	w := newWorld(t)
	defs := registry(t, orderDefinition(t, "order", 200*time.Millisecond))
	dbA := open()
	require.NoError(t, Migrate(t.Context(), dbA))
	a, err := New(Config{DB: dbA, JetStream: w.js, Definitions: defs, TimerInterval: time.Hour, ListenDSN: dsn})
	require.NoError(t, err)
	run(t, "engine A", a.Run)
	// Let A's timer loop read "no deadline" and go to sleep for its hour.
	eventually(t, "timer loop asleep", func() bool {
		a.timers.mu.Lock()
		defer a.timers.mu.Unlock()
		return !a.timers.until.IsZero()
	})
	b, err := New(Config{DB: open(), Definitions: defs, ListenDSN: dsn})
	require.NoError(t, err)
	id, err := b.Start(t.Context(), "order", "k", nil, StartOptions{})
	require.NoError(t, err)
	eventually(t, "replica A fires the timeout", func() bool {
		return slices.Contains(kinds(history(t, a, id)), "timeout create-order 1 forward")
	})
}
