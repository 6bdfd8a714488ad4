package participant_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/dbtest"
	"github.com/sagaflow/sagaflow/internal/natstest"
	"github.com/sagaflow/sagaflow/internal/protocol"
	"github.com/sagaflow/sagaflow/outbox"
	"github.com/sagaflow/sagaflow/participant"
)

const (
	service    = "svc"
	definition = "test-saga"
)

// bundle is what a test drives a participant with.
type bundle struct {
	db  *sqlx.DB
	js  jetstream.JetStream
	pub *bus.Publisher
}

// setup migrates db and starts a JetStream server with Sagaflow's streams; each participant runs
// its own outbox relay on db.
func setup(t testing.TB, db *sqlx.DB) *bundle {
	t.Helper()
	ctx := t.Context()
	srv := natstest.New(t, nil)
	js := srv.JetStream(t)
	require.NoError(t, bus.EnsureStreams(ctx, js, bus.StreamsConfig{}))
	require.NoError(t, participant.Migrate(ctx, db))
	_, err := db.ExecContext(ctx, `CREATE TABLE effects (saga_id TEXT NOT NULL, step TEXT NOT NULL, action TEXT NOT NULL, by_replica TEXT NOT NULL DEFAULT '')`)
	require.NoError(t, err)
	pub, err := bus.NewPublisher(js, bus.PublisherConfig{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	return &bundle{db: db, js: js, pub: pub}
}

// participant starts a participant for service on b with handlers registered by reg.
func (b *bundle) participant(t testing.TB, cfg participant.Config, reg func(p *participant.Participant)) *participant.Participant {
	t.Helper()
	cfg.Service = service
	if cfg.NakDelay == 0 {
		cfg.NakDelay = 20 * time.Millisecond
	}
	if cfg.Relay == nil && !cfg.DisableRelay {
		cfg.Relay = &outbox.RelayConfig{PollInterval: 20 * time.Millisecond}
	}
	p, err := participant.New(b.db, b.js, &cfg)
	require.NoError(t, err)
	reg(p)
	// Start returns once the participant consumes, so what a test sends next finds every replica
	// ready.
	require.NoError(t, p.Start(t.Context()))
	t.Cleanup(func() { require.NoError(t, p.Stop(context.Background())) })
	return p
}

// command builds a command of the test saga.
func command(sagaID, step, name string, action protocol.Action, attempt int) *protocol.Command {
	return &protocol.Command{
		MessageID:  uuid.NewString(),
		SagaID:     sagaID,
		Definition: definition,
		Version:    1,
		Step:       step,
		Attempt:    attempt,
		Action:     action,
		Service:    service,
		Name:       name,
		ReplyTo:    protocol.ReplySubject(definition),
		Payload:    json.RawMessage(`{"input":{"order_id":"o-1"},"steps":{}}`),
		Time:       time.Now(),
	}
}

func (b *bundle) send(t testing.TB, cmds ...*protocol.Command) {
	t.Helper()
	for _, c := range cmds {
		require.NoError(t, b.pub.Publish(c.Subject(), c.Message()))
	}
}

// replies reads the test saga's answers from SAGA_REPLIES, from the start of the stream: every
// reply but the news of failed handlings (outcome retrying), which news reads.
func (b *bundle) replies(t testing.TB) <-chan protocol.Reply {
	t.Helper()
	answers, _ := b.split(t)
	return answers
}

// news reads the news of failed handlings (outcome retrying) from SAGA_REPLIES.
func (b *bundle) news(t testing.TB) <-chan protocol.Reply {
	t.Helper()
	_, news := b.split(t)
	return news
}

func (b *bundle) split(t testing.TB) (answers, news <-chan protocol.Reply) {
	t.Helper()
	a, n := make(chan protocol.Reply, 1024), make(chan protocol.Reply, 1024)
	all := consume(t, b.js, bus.StreamReplies, protocol.ReplySubject(definition), func(m jetstream.Msg) protocol.Reply {
		r, err := protocol.ParseReply(toWatermill(m))
		require.NoError(t, err)
		return r
	})
	done := make(chan struct{})
	stopped := make(chan struct{})
	t.Cleanup(func() {
		close(done)
		<-stopped
	})
	go func() {
		defer close(stopped)
		for {
			select {
			case r := <-all:
				if r.Outcome == protocol.OutcomeRetrying {
					n <- r
				} else {
					a <- r
				}
			case <-done:
				return
			}
		}
	}()
	return a, n
}

// dead reads the dead-letter stream.
func (b *bundle) dead(t testing.TB) <-chan jetstream.Msg {
	t.Helper()
	return consume(t, b.js, bus.StreamDLQ, bus.DLQPrefix+">", func(m jetstream.Msg) jetstream.Msg { return m })
}

func consume[T any](t testing.TB, js jetstream.JetStream, stream, subject string, conv func(jetstream.Msg) T) <-chan T {
	t.Helper()
	ctx := t.Context()
	// An explicit-ack consumer: SAGA_REPLIES is a work queue, which takes no other kind; acking
	// takes each reply off the stream, as the orchestrator would.
	c, err := js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{
		FilterSubjects: []string{subject}, AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	require.NoError(t, err)
	out := make(chan T, 1024)
	cc, err := c.Consume(func(m jetstream.Msg) {
		out <- conv(m)
		_ = m.Ack()
	})
	require.NoError(t, err)
	t.Cleanup(cc.Stop)
	return out
}

func toWatermill(m jetstream.Msg) *message.Message {
	msg := message.NewMessage(m.Headers().Get(nats.MsgIdHdr), m.Data())
	for k, v := range m.Headers() {
		msg.Metadata.Set(k, v[0])
	}
	return msg
}

// next waits for the next value of ch, failing the test when the test context ends first.
func next[T any](t testing.TB, ch <-chan T) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	select {
	case v := <-ch:
		return v
	case <-ctx.Done():
		t.Fatal("timed out waiting for a message")
		panic("unreachable")
	}
}

func (b *bundle) effects(t testing.TB, sagaID, step, action string) int {
	t.Helper()
	var n int
	require.NoError(t, b.db.GetContext(t.Context(), &n, b.db.Rebind(`SELECT COUNT(*) FROM effects WHERE saga_id = ? AND step = ? AND action = ?`), sagaID, step, action))
	return n
}

// effect is a handler that records an effect in its transaction and counts its calls.
func effect(calls *atomic.Int32, res func(n int32, cmd participant.Command) (participant.Result, error)) participant.Handler {
	return func(ctx context.Context, tx *sqlx.Tx, cmd participant.Command) (participant.Result, error) {
		n := calls.Add(1)
		action := "forward"
		if cmd.Compensation {
			action = "compensate"
		}
		if _, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO effects (saga_id, step, action) VALUES (?, ?, ?)`), cmd.SagaID, cmd.Step, action); err != nil {
			return participant.Result{}, err
		}
		return res(n, cmd)
	}
}

func TestParticipant(t *testing.T) {
	t.Parallel()

	t.Run("SuccessWithOutput", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			b := setup(t, db)
			var calls atomic.Int32
			b.participant(t, participant.Config{}, func(p *participant.Participant) {
				p.Handle("Do", effect(&calls, func(_ int32, cmd participant.Command) (participant.Result, error) {
					var in struct {
						OrderID string `json:"order_id"`
					}
					if err := cmd.Input(&in); err != nil {
						return participant.Result{}, err
					}
					return participant.Success(map[string]string{"order": in.OrderID, "step": cmd.Step}), nil
				}))
			})
			replies := b.replies(t)
			b.send(t, command("s1", "one", "Do", protocol.ActionForward, 1))
			r := next(t, replies)
			require.Equal(t, protocol.OutcomeSuccess, r.Outcome)
			require.Equal(t, "s1", r.SagaID)
			require.Equal(t, "one", r.Step)
			require.Equal(t, 1, r.Attempt)
			require.Equal(t, protocol.ActionForward, r.Action)
			require.JSONEq(t, `{"order":"o-1","step":"one"}`, string(r.Output))
			require.Equal(t, 1, b.effects(t, "s1", "one", "forward"))
		})
	})

	t.Run("FailureWithReason", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			b := setup(t, db)
			var calls atomic.Int32
			b.participant(t, participant.Config{}, func(p *participant.Participant) {
				p.Handle("Do", effect(&calls, func(int32, participant.Command) (participant.Result, error) {
					return participant.Failure("card declined"), nil
				}))
			})
			replies := b.replies(t)
			b.send(t, command("s1", "one", "Do", protocol.ActionForward, 1))
			r := next(t, replies)
			require.Equal(t, protocol.OutcomeFailure, r.Outcome)
			require.Equal(t, "card declined", r.Reason)
			// The failed handler's writes are rolled back: a business failure leaves no effect.
			require.Equal(t, 0, b.effects(t, "s1", "one", "forward"))
			// A retry of the same step is answered from the barrier with the same failure.
			b.send(t, command("s1", "one", "Do", protocol.ActionForward, 2))
			r = next(t, replies)
			require.Equal(t, protocol.OutcomeFailure, r.Outcome)
			require.Equal(t, "card declined", r.Reason)
			require.Equal(t, 2, r.Attempt)
			require.Equal(t, int32(1), calls.Load())
		})
	})

	t.Run("RetryGenerationRunsAFailedStepAgain", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			b := setup(t, db)
			var fwd, comp atomic.Int32
			b.participant(t, participant.Config{}, func(p *participant.Participant) {
				p.Handle("Do", effect(&fwd, func(_ int32, cmd participant.Command) (participant.Result, error) {
					if cmd.Generation == 0 {
						return participant.Failure("address invalid"), nil
					}
					return participant.Success(map[string]int{"generation": cmd.Generation}), nil
				}))
				p.Compensate("Undo", effect(&comp, func(int32, participant.Command) (participant.Result, error) {
					return participant.Success(nil), nil
				}))
			})
			replies := b.replies(t)
			b.send(t, command("s1", "one", "Do", protocol.ActionForward, 1))
			require.Equal(t, protocol.OutcomeFailure, next(t, replies).Outcome)
			// The operator's retry: generation 1 runs the handler again.
			retry := command("s1", "one", "Do", protocol.ActionForward, 2)
			retry.Generation = 1
			b.send(t, retry)
			r := next(t, replies)
			require.Equal(t, protocol.OutcomeSuccess, r.Outcome)
			require.Equal(t, 2, r.Attempt)
			require.JSONEq(t, `{"generation":1}`, string(r.Output))
			require.Equal(t, 1, b.effects(t, "s1", "one", "forward"), "the failure left no effect, the retry one")
			// Within generation 1 a duplicate is answered from the record, and a late command of
			// generation 0 still gets its recorded failure.
			dup := command("s1", "one", "Do", protocol.ActionForward, 3)
			dup.Generation = 1
			b.send(t, dup)
			r = next(t, replies)
			require.Equal(t, protocol.OutcomeSuccess, r.Outcome)
			require.JSONEq(t, `{"generation":1}`, string(r.Output))
			b.send(t, command("s1", "one", "Do", protocol.ActionForward, 1))
			r = next(t, replies)
			require.Equal(t, protocol.OutcomeFailure, r.Outcome)
			require.Equal(t, "address invalid", r.Reason)
			require.Equal(t, int32(2), fwd.Load(), "the handler ran once per generation")
			// Compensating generation 1 undoes its effect; generation 2 never ran: a null
			// compensation, and its forward arriving afterwards is refused.
			undo := command("s1", "one", "Undo", protocol.ActionCompensate, 1)
			undo.Generation = 1
			b.send(t, undo)
			require.Equal(t, protocol.OutcomeSuccess, next(t, replies).Outcome)
			require.Equal(t, int32(1), comp.Load())
			undo2 := command("s1", "one", "Undo", protocol.ActionCompensate, 2)
			undo2.Generation = 2
			b.send(t, undo2)
			require.Equal(t, protocol.OutcomeSuccess, next(t, replies).Outcome)
			require.Equal(t, int32(1), comp.Load(), "null compensation: the handler is not called")
			hanging := command("s1", "one", "Do", protocol.ActionForward, 4)
			hanging.Generation = 2
			b.send(t, hanging)
			r = next(t, replies)
			require.Equal(t, protocol.OutcomeCancelled, r.Outcome)
			require.Equal(t, int32(2), fwd.Load(), "a forward after its generation's compensation never runs")
		})
	})

	t.Run("DuplicateCommandReplaysReply", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			b := setup(t, db)
			var calls atomic.Int32
			b.participant(t, participant.Config{}, func(p *participant.Participant) {
				p.Handle("Do", effect(&calls, func(n int32, _ participant.Command) (participant.Result, error) {
					return participant.Success(map[string]int32{"call": n}), nil
				}))
			})
			replies := b.replies(t)
			first := command("s1", "one", "Do", protocol.ActionForward, 1)
			b.send(t, first)
			r1 := next(t, replies)
			// The same command again as a new message (a redelivery through another path), then
			// the orchestrator's retry with attempt 2.
			again := *first
			again.MessageID = uuid.NewString()
			b.send(t, &again, command("s1", "one", "Do", protocol.ActionForward, 2))
			r2, r3 := next(t, replies), next(t, replies)
			require.Equal(t, int32(1), calls.Load(), "the handler ran once")
			require.Equal(t, 1, b.effects(t, "s1", "one", "forward"))
			for _, r := range []protocol.Reply{r1, r2, r3} {
				require.Equal(t, protocol.OutcomeSuccess, r.Outcome)
				require.JSONEq(t, `{"call":1}`, string(r.Output))
			}
			require.ElementsMatch(t, []int{1, 2}, []int{r2.Attempt, r3.Attempt}, "each reply echoes its command's attempt")
			require.NotEqual(t, r1.MessageID, r2.MessageID)
		})
	})

	t.Run("CompensationAfterForward", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			b := setup(t, db)
			var fwd, comp atomic.Int32
			b.participant(t, participant.Config{}, func(p *participant.Participant) {
				p.Handle("Do", effect(&fwd, func(int32, participant.Command) (participant.Result, error) { return participant.Success(nil), nil }))
				p.Compensate("Undo", effect(&comp, func(int32, participant.Command) (participant.Result, error) {
					return participant.Success(map[string]bool{"undone": true}), nil
				}))
			})
			replies := b.replies(t)
			b.send(t, command("s1", "one", "Do", protocol.ActionForward, 1))
			require.Equal(t, protocol.OutcomeSuccess, next(t, replies).Outcome)
			b.send(t, command("s1", "one", "Undo", protocol.ActionCompensate, 1))
			r := next(t, replies)
			require.Equal(t, protocol.OutcomeSuccess, r.Outcome)
			require.Equal(t, protocol.ActionCompensate, r.Action)
			require.JSONEq(t, `{"undone":true}`, string(r.Output))
			b.send(t, command("s1", "one", "Undo", protocol.ActionCompensate, 2))
			r = next(t, replies)
			require.Equal(t, protocol.OutcomeSuccess, r.Outcome)
			require.JSONEq(t, `{"undone":true}`, string(r.Output))
			require.Equal(t, int32(1), comp.Load(), "the compensation ran once")
			require.Equal(t, 1, b.effects(t, "s1", "one", "compensate"))
		})
	})

	t.Run("NullCompensation", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			b := setup(t, db)
			var fwd, comp atomic.Int32
			b.participant(t, participant.Config{}, func(p *participant.Participant) {
				p.Handle("Do", effect(&fwd, func(int32, participant.Command) (participant.Result, error) { return participant.Success(nil), nil }))
				p.Compensate("Undo", effect(&comp, func(int32, participant.Command) (participant.Result, error) { return participant.Success(nil), nil }))
			})
			replies := b.replies(t)
			b.send(t, command("s1", "one", "Undo", protocol.ActionCompensate, 1))
			r := next(t, replies)
			require.Equal(t, protocol.OutcomeSuccess, r.Outcome)
			require.Equal(t, protocol.ActionCompensate, r.Action)
			require.Equal(t, int32(0), comp.Load(), "the compensation handler is not called when the forward never ran")
			require.Equal(t, 0, b.effects(t, "s1", "one", "compensate"))
		})
	})

	t.Run("HangingForwardAfterCompensationIsCancelled", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			b := setup(t, db)
			var fwd, comp atomic.Int32
			b.participant(t, participant.Config{}, func(p *participant.Participant) {
				p.Handle("Do", effect(&fwd, func(int32, participant.Command) (participant.Result, error) { return participant.Success(nil), nil }))
				p.Compensate("Undo", effect(&comp, func(int32, participant.Command) (participant.Result, error) { return participant.Success(nil), nil }))
			})
			replies := b.replies(t)
			b.send(t, command("s1", "one", "Undo", protocol.ActionCompensate, 1))
			require.Equal(t, protocol.OutcomeSuccess, next(t, replies).Outcome)
			b.send(t, command("s1", "one", "Do", protocol.ActionForward, 3))
			r := next(t, replies)
			require.Equal(t, protocol.OutcomeCancelled, r.Outcome)
			require.Equal(t, protocol.ActionForward, r.Action)
			require.Equal(t, 3, r.Attempt)
			require.NotEmpty(t, r.Reason)
			require.Equal(t, int32(0), fwd.Load(), "a forward after its compensation never runs")
			require.Equal(t, 0, b.effects(t, "s1", "one", "forward"))
		})
	})

	t.Run("TransientErrorIsRedelivered", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			b := setup(t, db)
			var calls atomic.Int32
			b.participant(t, participant.Config{MaxDeliver: 5}, func(p *participant.Participant) {
				p.Handle("Do", effect(&calls, func(n int32, _ participant.Command) (participant.Result, error) {
					if n < 3 {
						return participant.Result{}, errors.New("database of a dependency is down")
					}
					return participant.Success(map[string]int32{"call": n}), nil
				}))
			})
			replies, news := b.split(t)
			b.send(t, command("s1", "one", "Do", protocol.ActionForward, 1))
			r := next(t, replies)
			require.Equal(t, protocol.OutcomeSuccess, r.Outcome)
			require.JSONEq(t, `{"call":3}`, string(r.Output))
			require.Equal(t, int32(3), calls.Load())
			for range 2 { // the orchestrator is told why each failed handling failed
				n := next(t, news)
				require.Equal(t, "s1", n.SagaID)
				require.Equal(t, 1, n.Attempt)
				require.Equal(t, protocol.ActionForward, n.Action)
				require.Equal(t, "database of a dependency is down", n.Reason)
			}
			require.Equal(t, 1, b.effects(t, "s1", "one", "forward"), "the failed calls' writes were rolled back")
		})
	})

	t.Run("PanicIsTransient", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			b := setup(t, db)
			var calls atomic.Int32
			b.participant(t, participant.Config{MaxDeliver: 5}, func(p *participant.Participant) {
				p.Handle("Do", effect(&calls, func(n int32, _ participant.Command) (participant.Result, error) {
					if n == 1 {
						panic("nil map somewhere")
					}
					return participant.Success(nil), nil
				}))
			})
			replies := b.replies(t)
			b.send(t, command("s1", "one", "Do", protocol.ActionForward, 1))
			require.Equal(t, protocol.OutcomeSuccess, next(t, replies).Outcome)
			require.Equal(t, int32(2), calls.Load())
			require.Equal(t, 1, b.effects(t, "s1", "one", "forward"))
		})
	})

	t.Run("AlwaysFailingGoesToDLQ", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			b := setup(t, db)
			var calls atomic.Int32
			b.participant(t, participant.Config{MaxDeliver: 3}, func(p *participant.Participant) {
				p.Handle("Do", effect(&calls, func(int32, participant.Command) (participant.Result, error) {
					return participant.Result{}, errors.New("ledger locked")
				}))
			})
			dead := b.dead(t)
			c := command("s1", "one", "Do", protocol.ActionForward, 1)
			b.send(t, c)
			m := next(t, dead)
			require.Equal(t, bus.DLQPrefix+c.Subject(), m.Subject())
			require.Contains(t, m.Headers().Get(bus.HeaderDLQReason), "ledger locked")
			require.Equal(t, "3", m.Headers().Get(bus.HeaderDLQDeliveries))
			require.Equal(t, "s1", m.Headers().Get(protocol.HeaderSagaID))
			require.Equal(t, int32(3), calls.Load())
			require.Equal(t, 0, b.effects(t, "s1", "one", "forward"))
			var rows int
			require.NoError(t, db.GetContext(t.Context(), &rows, `SELECT COUNT(*) FROM sagaflow_barrier`))
			require.Equal(t, 0, rows, "nothing is recorded for a command that never completed")
		})
	})

	t.Run("MalformedAndUnknownGoToDLQAtOnce", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			b := setup(t, db)
			var calls atomic.Int32
			b.participant(t, participant.Config{MaxDeliver: 5}, func(p *participant.Participant) {
				p.Handle("Do", effect(&calls, func(int32, participant.Command) (participant.Result, error) { return participant.Success(nil), nil }))
			})
			dead := b.dead(t)
			bad := message.NewMessage(uuid.NewString(), []byte(`{"input":{}}`))
			bad.Metadata.Set(protocol.HeaderSagaID, "s1") // no step, attempt, action, reply subject
			require.NoError(t, b.pub.Publish(protocol.CommandSubject(service, "Do"), bad))
			m := next(t, dead)
			require.Contains(t, m.Headers().Get(bus.HeaderDLQReason), protocol.HeaderStep)
			require.Equal(t, "1", m.Headers().Get(bus.HeaderDLQDeliveries))

			b.send(t, command("s2", "one", "Nope", protocol.ActionForward, 1))
			m = next(t, dead)
			require.Contains(t, m.Headers().Get(bus.HeaderDLQReason), participant.ErrUnknownCommand.Error())
			require.Contains(t, m.Headers().Get(bus.HeaderDLQReason), "Nope")
			require.Equal(t, "1", m.Headers().Get(bus.HeaderDLQDeliveries))
			require.Equal(t, int32(0), calls.Load())
		})
	})

	t.Run("RejectGoesToDLQAtOnceWithoutEffect", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			b := setup(t, db)
			var calls atomic.Int32
			b.participant(t, participant.Config{MaxDeliver: 5}, func(p *participant.Participant) {
				p.Handle("Do", effect(&calls, func(int32, participant.Command) (participant.Result, error) {
					return participant.Result{}, participant.Reject(errors.New("card network says this order is fraudulent"))
				}))
			})
			dead, news := b.dead(t), b.news(t)
			c := command("s1", "one", "Do", protocol.ActionForward, 1)
			b.send(t, c)
			m := next(t, dead)
			require.Equal(t, bus.DLQPrefix+c.Subject(), m.Subject())
			require.Contains(t, m.Headers().Get(bus.HeaderDLQReason), "fraudulent")
			n := next(t, news)
			require.Equal(t, "s1", n.SagaID)
			require.Contains(t, n.Reason, "dead-lettered: ")
			require.Contains(t, n.Reason, "fraudulent", "the orchestrator is told why the attempt will time out")
			require.Equal(t, "1", m.Headers().Get(bus.HeaderDLQDeliveries), "a rejected command is not redelivered")
			require.Equal(t, int32(1), calls.Load())
			require.Equal(t, 0, b.effects(t, "s1", "one", "forward"), "the handler's writes are rolled back")
			var rows int
			require.NoError(t, db.GetContext(t.Context(), &rows, `SELECT COUNT(*) FROM sagaflow_barrier`))
			require.Equal(t, 0, rows, "nothing is recorded for a rejected command")
		})
	})

	t.Run("ReplyOutsideSagaReplyIsRefused", func(t *testing.T) {
		t.Parallel()
		b := setup(t, dbtest.Open(t, "sqlite"))
		var calls atomic.Int32
		b.participant(t, participant.Config{}, func(p *participant.Participant) {
			p.Handle("Do", effect(&calls, func(int32, participant.Command) (participant.Result, error) { return participant.Success(nil), nil }))
		})
		dead := b.dead(t)
		for _, replyTo := range []string{"events.travel.injected", "x.y.z", "saga.reply.a.b", "saga.cmd.svc.Do", "saga.reply.>"} {
			c := command("s-"+replyTo, "one", "Do", protocol.ActionForward, 1)
			c.ReplyTo = replyTo
			b.send(t, c)
			m := next(t, dead)
			require.Equal(t, bus.DLQPrefix+c.Subject(), m.Subject())
			require.Contains(t, m.Headers().Get(bus.HeaderDLQReason), participant.ErrReplyTo.Error())
			require.Contains(t, m.Headers().Get(bus.HeaderDLQReason), replyTo)
		}
		require.Equal(t, int32(0), calls.Load(), "a command with a forged reply subject is never executed")
		var rows int
		require.NoError(t, b.db.GetContext(t.Context(), &rows, `SELECT COUNT(*) FROM sagaflow_outbox`))
		require.Equal(t, 0, rows, "nothing was written for the forged reply subjects")
	})

	t.Run("PublishedEventsLeaveOnlyWithTheirCommit", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			b := setup(t, db)
			b.participant(t, participant.Config{Relay: &outbox.RelayConfig{ClaimDelay: time.Hour}}, func(p *participant.Participant) {
				p.Handle("Do", func(ctx context.Context, tx *sqlx.Tx, cmd participant.Command) (participant.Result, error) {
					ev := message.NewMessage("", []byte(`{"saga":"`+cmd.SagaID+`"}`))
					if err := cmd.Publish(ctx, tx, "events.test."+cmd.SagaID, ev); err != nil {
						return participant.Result{}, err
					}
					if cmd.SagaID == "declined" {
						return participant.Failure("declined"), nil // the event is rolled back with it
					}
					return participant.Success(nil), nil
				})
			})
			replies := b.replies(t)
			events := consume(t, b.js, bus.StreamEvents, "events.test.>", func(m jetstream.Msg) string { return m.Subject() })
			b.send(t, command("declined", "one", "Do", protocol.ActionForward, 1))
			require.Equal(t, protocol.OutcomeFailure, next(t, replies).Outcome)
			b.send(t, command("ok", "one", "Do", protocol.ActionForward, 1))
			require.Equal(t, protocol.OutcomeSuccess, next(t, replies).Outcome)
			// Published from memory after the commit (the relay's claim waits an hour): only the
			// committed event, and its row is gone once JetStream has it.
			require.Equal(t, "events.test.ok", next(t, events))
			require.Eventually(t, func() bool {
				var n int
				return db.GetContext(t.Context(), &n, `SELECT COUNT(*) FROM sagaflow_outbox`) == nil && n == 0
			}, time.Minute, 10*time.Millisecond, "nothing left in the outbox: the declined handler's event was rolled back")
			select {
			case s := <-events:
				t.Fatalf("the rolled-back event was published: %s", s)
			default:
			}
		})
	})

	t.Run("PublishOutsideAParticipant", func(t *testing.T) {
		t.Parallel()
		require.ErrorIs(t, participant.Command{}.Publish(t.Context(), nil, "events.x.y"), participant.ErrNoParticipant)
	})

	t.Run("ReplicasShareWorkEffectsOnce", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			b := setup(t, db)
			const sagas = 60
			var calls [2]atomic.Int32
			for i := range 2 {
				b.participant(t, participant.Config{Batch: 4, MaxDeliver: 10}, func(p *participant.Participant) {
					p.Handle("Do", func(ctx context.Context, tx *sqlx.Tx, cmd participant.Command) (participant.Result, error) {
						n := calls[i].Add(1)
						if n%7 == 0 {
							// A transient error inside a batch must not sink the other commands.
							return participant.Result{}, errors.New("transient")
						}
						if _, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO effects (saga_id, step, action, by_replica) VALUES (?, ?, 'forward', ?)`), cmd.SagaID, cmd.Step, strconv.Itoa(i)); err != nil {
							return participant.Result{}, err
						}
						// Slow enough that one replica cannot take everything.
						time.Sleep(2 * time.Millisecond)
						return participant.Success(map[string]int{"replica": i}), nil
					})
				})
			}
			replies := b.replies(t)
			// Every command twice (as two messages), so both replicas race for the same key.
			for i := range sagas {
				c := command(fmt.Sprintf("s%03d", i), "one", "Do", protocol.ActionForward, 1)
				again := *c
				again.MessageID = uuid.NewString()
				b.send(t, c, &again)
			}
			got := map[string][]string{}
			for range 2 * sagas {
				r := next(t, replies)
				require.Equal(t, protocol.OutcomeSuccess, r.Outcome, "saga %s: %s", r.SagaID, r.Reason)
				got[r.SagaID] = append(got[r.SagaID], string(r.Output))
			}
			require.Len(t, got, sagas)
			for id, outs := range got {
				require.Len(t, outs, 2, "saga %s", id)
				require.Equal(t, outs[0], outs[1], "saga %s: the second reply replays the first", id)
			}
			var rows []struct {
				SagaID string `db:"saga_id"`
				N      int    `db:"n"`
			}
			require.NoError(t, db.SelectContext(t.Context(), &rows, `SELECT saga_id, COUNT(*) AS n FROM effects GROUP BY saga_id`))
			require.Len(t, rows, sagas)
			for _, r := range rows {
				require.Equal(t, 1, r.N, "saga %s: effect applied once", r.SagaID)
			}
			var byReplica []int
			require.NoError(t, db.SelectContext(t.Context(), &byReplica, `SELECT COUNT(*) FROM effects GROUP BY by_replica ORDER BY by_replica`))
			require.Len(t, byReplica, 2, "both replicas handled commands: %v", byReplica)
		})
	})
}

// TestForwardRacingCompensation sends each step's forward command and its compensation at the same
// time to two replicas: whatever the interleaving, either the forward ran and was undone, or it was
// refused and nothing ran. A forward effect without its undo would be a lost compensation.
func TestForwardRacingCompensation(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
		b := setup(t, db)
		const sagas = 40
		for range 2 {
			b.participant(t, participant.Config{Batch: 3}, func(p *participant.Participant) {
				var fwd, comp atomic.Int32
				p.Handle("Do", effect(&fwd, func(int32, participant.Command) (participant.Result, error) {
					time.Sleep(time.Millisecond) // widen the window in which the compensation can arrive
					return participant.Success(nil), nil
				}))
				p.Compensate("Undo", effect(&comp, func(int32, participant.Command) (participant.Result, error) { return participant.Success(nil), nil }))
			})
		}
		replies := b.replies(t)
		for i := range sagas {
			id := fmt.Sprintf("s%03d", i)
			fwd, comp := command(id, "one", "Do", protocol.ActionForward, 1), command(id, "one", "Undo", protocol.ActionCompensate, 1)
			if i%2 == 1 {
				fwd, comp = comp, fwd
			}
			require.NoError(t, b.pub.Publish(fwd.Subject(), fwd.Message()))
			require.NoError(t, b.pub.Publish(comp.Subject(), comp.Message()))
		}
		outcomes := map[string][]protocol.Outcome{}
		for range 2 * sagas {
			r := next(t, replies)
			outcomes[r.SagaID] = append(outcomes[r.SagaID], r.Outcome)
		}
		refused := 0
		for i := range sagas {
			id := fmt.Sprintf("s%03d", i)
			f, c := b.effects(t, id, "one", "forward"), b.effects(t, id, "one", "compensate")
			require.Equal(t, f, c, "saga %s: forward effects %d, compensations %d", id, f, c)
			require.LessOrEqual(t, f, 1)
			if f == 0 {
				refused++
				require.Contains(t, outcomes[id], protocol.OutcomeCancelled, "saga %s: a forward that did not run was refused", id)
			}
		}
		t.Logf("%d of %d forwards were refused because their compensation came first", refused, sagas)
	})
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	_, err := participant.New(nil, nil, &participant.Config{Service: "Bad Name", Batch: -1})
	require.Error(t, err)
	for _, want := range []string{"Service", "db: required", "js: required", "Batch"} {
		require.Contains(t, err.Error(), want)
	}
}

func TestStartStop(t *testing.T) {
	t.Parallel()
	b := setup(t, dbtest.Open(t, "sqlite"))
	p, err := participant.New(b.db, b.js, &participant.Config{Service: service})
	require.NoError(t, err)
	var calls atomic.Int32
	p.Handle("Do", effect(&calls, func(int32, participant.Command) (participant.Result, error) { return participant.Success(nil), nil }))
	require.NoError(t, p.Stop(t.Context()), "Stop before Start is a no-op")
	require.NoError(t, p.Start(t.Context()))
	require.NoError(t, p.Start(t.Context()), "Start twice is a no-op")
	replies := b.replies(t)
	b.send(t, command("s1", "one", "Do", protocol.ActionForward, 1))
	require.Equal(t, protocol.OutcomeSuccess, next(t, replies).Outcome)
	require.NoError(t, p.Stop(t.Context()))
	require.NoError(t, p.Stop(t.Context()), "Stop twice is a no-op")
	require.Equal(t, int32(1), calls.Load())
}
