package outbox

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jmoiron/sqlx"

	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/sqldb"
)

// Publishing from memory. The process that commits outbox rows already holds their messages: it
// hands them to Committed and the relay publishes them at once, pipelined in batches, instead of
// being woken, claiming the rows in a transaction held across the publish, and marking them. The
// rows stay the durable copy: each acknowledged batch is deleted (or marked published) by one
// statement; a message that fails, or that was still queued when the process died, is published
// by the claim once its row is older than RelayConfig.ClaimDelay. A message published both ways
// carries the same Nats-Msg-Id, which JetStream's duplicate window drops.

// Committed hands the relay messages that Writer.Write put in the outbox to subject, in a
// transaction that has now committed: CommittedAll with one Envelope per message.
func (r *Relay) Committed(subject string, msgs ...*message.Message) {
	envs := make([]Envelope, len(msgs))
	for i, m := range msgs {
		envs[i] = Envelope{Subject: subject, Message: m}
	}
	r.CommittedAll(envs)
}

// CommittedAll hands the relay the envelopes that Writer.WriteAll (or Write) put in the outbox, in
// a transaction that has now committed, to publish at once from memory (see the package
// documentation), each to its envelope's subject. It never blocks: messages wait in a queue of
// 4×BatchSize until Run publishes them, and when the queue is full they are left to the claim.
// Messages with an ordering key are always left to the claim, which keeps key order. Safe for
// concurrent use.
func (r *Relay) CommittedAll(envs []Envelope) {
	for _, e := range envs {
		m := e.Message
		if m == nil || m.UUID == "" || m.Metadata.Get(orderingKey) != "" {
			continue
		}
		out := bus.Message{Subject: e.Subject, ID: m.UUID, Headers: make(map[string]string, len(m.Metadata)), Payload: m.Payload}
		for k, v := range m.Metadata {
			if !strings.HasPrefix(k, "_sagaflow_") {
				out.Headers[k] = v
			}
		}
		select {
		case r.direct <- out:
		default:
			r.directDropped.Add(1) // the claim publishes it after ClaimDelay
		}
	}
}

// sendDirect publishes what Committed queues until ctx ends, then what is still queued (within
// ShutdownTimeout).
func (r *Relay) sendDirect(ctx context.Context) {
	for {
		var first bus.Message
		select {
		case first = <-r.direct:
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.ShutdownTimeout)
			defer cancel()
			for {
				batch := r.drainDirect(nil)
				if len(batch) == 0 || dctx.Err() != nil {
					return
				}
				r.publishDirect(dctx, batch)
			}
		}
		r.publishDirect(ctx, r.drainDirect([]bus.Message{first}))
	}
}

// drainDirect appends to batch what is queued, up to BatchSize, without waiting.
func (r *Relay) drainDirect(batch []bus.Message) []bus.Message {
	for len(batch) < r.cfg.BatchSize {
		select {
		case m := <-r.direct:
			batch = append(batch, m)
		default:
			return batch
		}
	}
	return batch
}

// publishDirect publishes batch and deletes (or marks) the rows of the acknowledged messages.
// Failures are left to the claim: nothing is counted against a row here.
func (r *Relay) publishDirect(ctx context.Context, batch []bus.Message) {
	span := r.startPublishSpan(ctx, batch)
	res := outcome{failed: map[int]error{}}
	defer func() { endPublishSpan(span, res) }()
	if err := r.pub.PublishBatch(ctx, batch); err != nil {
		var pe *bus.PublishError
		if !errors.As(err, &pe) {
			r.cfg.Logger.WarnContext(ctx, "publish from memory failed; the relay's claim will publish the batch", "batch", len(batch), "err", err)
			return
		}
		for _, f := range pe.Failures {
			res.failed[f.Index] = f.Err
		}
		r.cfg.Logger.DebugContext(ctx, "publish from memory: some messages left to the claim", "failed", len(pe.Failures), "batch", len(batch))
	}
	ids := make([]string, 0, len(batch))
	for i, m := range batch {
		if _, bad := res.failed[i]; !bad {
			ids = append(ids, m.ID)
		}
	}
	res.published = len(ids)
	r.countPublished(ctx, res) // acknowledged by JetStream: published, whatever becomes of the rows
	if err := r.store.markPublishedIDs(ctx, r.db, ids, r.cfg.Retention > 0); err != nil {
		// The messages are stored in the stream; their rows are published again by the claim
		// after ClaimDelay, and JetStream drops the duplicates inside its window.
		r.cfg.Logger.WarnContext(ctx, "mark messages published from memory", "messages", len(ids), "err", err)
	}
}

// markPublishedIDs deletes (keep false) or stamps published the rows of message ids.
func (s storage) markPublishedIDs(ctx context.Context, ex sqlx.ExecerContext, ids []string, keep bool) error {
	base := `DELETE FROM sagaflow_outbox WHERE message_id IN (?)`
	if keep {
		base = `UPDATE sagaflow_outbox SET published_at = ` + s.now() + ` WHERE message_id IN (?) AND published_at IS NULL`
	}
	return s.execIn(ctx, ex, base, ids, len(ids))
}

// claimAge is the SQL condition leaving rows younger than delay to the process that wrote them.
func (s storage) claimAge(delay time.Duration) string {
	if delay <= 0 {
		return ""
	}
	if s.dialect == sqldb.Postgres {
		return fmt.Sprintf(" AND o.created_at < now() - interval '%d milliseconds'", delay.Milliseconds())
	}
	return fmt.Sprintf(" AND o.created_at < %s - %d", s.now(), delay.Milliseconds())
}
