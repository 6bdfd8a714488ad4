package chaos_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// maxRecorded bounds the messages a recorder keeps (the newest are kept).
const maxRecorded = 4000

// recorder listens to the saga commands and replies on the bus (a plain NATS subscription beside
// the JetStream consumers, which it does not disturb) and publishes copies of them again, as a bus
// or a client that duplicates messages would: each copy carries a new Nats-Msg-Id, so JetStream's
// duplicate window does not drop it and the consumers get it as a new message.
type recorder struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	rng *rand.Rand

	mu          sync.Mutex
	msgs        []*nats.Msg
	deadLetters []string // subject and reason of each dead letter seen
}

// newRecorder subscribes to saga.cmd.> and saga.reply.> on url, and to saga.dlq.> to tell what was
// dead-lettered; its connection reconnects forever (across nats-server kills) and is closed by
// close.
func newRecorder(url string, seed int64) (*recorder, error) {
	r := &recorder{rng: rand.New(rand.NewPCG(uint64(seed), 0xd0b1e))}
	nc, err := nats.Connect(url, nats.Name("chaos-duplicator"), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		return nil, fmt.Errorf("recorder: connect: %w", err)
	}
	r.nc = nc
	for _, subject := range []string{"saga.cmd.>", "saga.reply.>"} {
		if _, err := nc.Subscribe(subject, r.record); err != nil {
			nc.Close()
			return nil, fmt.Errorf("recorder: subscribe %s: %w", subject, err)
		}
	}
	if _, err := nc.Subscribe("saga.dlq.>", r.deadLetter); err != nil {
		nc.Close()
		return nil, fmt.Errorf("recorder: subscribe saga.dlq.>: %w", err)
	}
	if r.js, err = jetstream.New(nc); err != nil {
		nc.Close()
		return nil, fmt.Errorf("recorder: %w", err)
	}
	return r, nil
}

func (r *recorder) record(m *nats.Msg) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.msgs) == maxRecorded {
		r.msgs = append(r.msgs[:0], r.msgs[maxRecorded/2:]...)
	}
	r.msgs = append(r.msgs, m)
}

func (r *recorder) deadLetter(m *nats.Msg) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.deadLetters = append(r.deadLetters, m.Subject+": "+m.Header.Get("Sagaflow-Dlq-Reason"))
}

// deadLettered returns the dead letters seen: subject and reason.
func (r *recorder) deadLettered() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.deadLetters...)
}

// republish publishes copies of n recorded messages picked at random (fewer if fewer are kept),
// each under a new Nats-Msg-Id, to JetStream, and returns how many it published.
func (r *recorder) republish(ctx context.Context, n int) (int, error) {
	r.mu.Lock()
	picked := make([]*nats.Msg, 0, n)
	for range min(n, len(r.msgs)) {
		picked = append(picked, r.msgs[r.rng.IntN(len(r.msgs))])
	}
	r.mu.Unlock()
	for _, m := range picked {
		dup := nats.NewMsg(m.Subject)
		for k, vs := range m.Header {
			for _, v := range vs {
				dup.Header.Add(k, v)
			}
		}
		dup.Header.Set(jetstream.MsgIDHeader, "chaos-dup-"+uuid.NewString())
		dup.Data = m.Data
		err := poll(ctx, 30*time.Second, func(ctx context.Context) error {
			callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			_, err := r.js.PublishMsg(callCtx, dup)
			return err
		})
		if err != nil {
			return 0, fmt.Errorf("republish a copy of a message on %s: %w", m.Subject, err)
		}
	}
	return len(picked), nil
}

func (r *recorder) close() { r.nc.Close() }
