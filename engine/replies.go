package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jmoiron/sqlx"
	"go.opentelemetry.io/otel/trace"

	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/protocol"
	"github.com/sagaflow/sagaflow/internal/sqldb"
	"github.com/sagaflow/sagaflow/internal/telemetry"
	"github.com/sagaflow/sagaflow/saga"
)

// replyJob is one parsed reply waiting for its batch; done receives the verdict: nil to ack, an
// error to nack (or, wrapping bus.ErrPermanent, to dead-letter).
type replyJob struct {
	reply protocol.Reply
	// subject is the subject the reply arrived on: saga.reply.<definition>.
	subject string
	// span is the span context the reply carried (its participant's span), linked from the step's.
	span trace.SpanContext
	done chan error
}

// batcher applies replies in batches: the handler goroutines the router runs for each message
// hand their reply over and wait; the batcher takes whatever is queued (up to ReplyBatch) and
// applies it in one transaction. Under load, replies queue while a batch commits, so batches grow
// by themselves and no delay is added when idle (group commit).
type batcher struct {
	e    *Engine
	jobs chan *replyJob // unbuffered: a job taken is always answered
	// stopped is closed when the batcher no longer takes jobs.
	stopped chan struct{}
}

func newBatcher(e *Engine) *batcher {
	return &batcher{e: e, jobs: make(chan *replyJob), stopped: make(chan struct{})}
}

// handleReply is the router's handler for the replies consumer.
func (b *batcher) handleReply(msg *message.Message) error {
	r, err := protocol.ParseReply(msg)
	if err != nil {
		return fmt.Errorf("%w: %w", bus.ErrPermanent, err)
	}
	job := &replyJob{reply: r, subject: msg.Metadata.Get(bus.SubjectKey), span: telemetry.SpanContextOf(msg.Metadata), done: make(chan error, 1)}
	select {
	case b.jobs <- job:
		return <-job.done
	case <-b.stopped:
		return errShutdown
	}
}

// run applies batches until stop is closed; ctx bounds each batch's transaction.
func (b *batcher) run(ctx context.Context, stop <-chan struct{}) {
	defer close(b.stopped)
	batch := make([]*replyJob, 0, b.e.cfg.ReplyBatch)
	for {
		select {
		case j := <-b.jobs:
			batch = append(batch, j)
		case <-stop:
			return
		}
	drain:
		for len(batch) < b.e.cfg.ReplyBatch {
			select {
			case j := <-b.jobs:
				batch = append(batch, j)
			default:
				break drain
			}
		}
		b.e.applyReplies(ctx, batch)
		clear(batch)
		batch = batch[:0]
	}
}

// applyReplies applies jobs in one transaction and answers each. When that transaction fails it
// falls back to one transaction per reply, so that one poison reply cannot hold back the others.
func (e *Engine) applyReplies(ctx context.Context, jobs []*replyJob) {
	verdicts, err := e.applyRepliesTx(ctx, jobs)
	if err == nil {
		for i, j := range jobs {
			j.done <- verdicts[i]
		}
		return
	}
	if len(jobs) > 1 {
		e.log.WarnContext(ctx, "reply batch failed; applying its replies one by one", "replies", len(jobs), "err", err)
	}
	for _, j := range jobs {
		if len(jobs) == 1 {
			j.done <- err
			continue
		}
		verdicts, err := e.applyRepliesTx(ctx, []*replyJob{j})
		if err != nil {
			j.done <- err
			continue
		}
		j.done <- verdicts[0]
	}
}

// applyRepliesTx applies jobs in one transaction and returns each job's verdict. A verdict is a
// per-reply outcome that does not spoil the batch: nil (applied, or recorded as ignored), a
// permanent error (the reply names no known saga) or an error to retry later (its definition is
// not registered here). The error is the transaction's: nothing was committed.
func (e *Engine) applyRepliesTx(ctx context.Context, jobs []*replyJob) ([]error, error) {
	verdicts := make([]error, len(jobs))
	// Lock each saga once, in id order; apply a saga's replies in arrival order.
	order := make([]int, len(jobs))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		return strings.Compare(jobs[a].reply.SagaID, jobs[b].reply.SagaID)
	})
	ids := make([]string, 0, len(jobs))
	for _, i := range order {
		if id := jobs[i].reply.SagaID; len(ids) == 0 || ids[len(ids)-1] != id {
			ids = append(ids, id)
		}
	}
	var t *tx
	err := sqldb.InTx(ctx, e.cfg.DB, func(sqlTx *sqlx.Tx) error {
		t = e.newTx(sqlTx)
		rows, err := e.store.lock(ctx, sqlTx, ids)
		if err != nil {
			return err
		}
		// Check every reply, then record the message ids of those that pass in the inbox in one
		// statement. A reply that fails a check is not recorded, so its redelivery is checked
		// again; one found untrusted is checked again at its turn, since a reply before it in the
		// batch may have sent the attempt it answers (then it is recorded on its own).
		defs := make([]*saga.Definition, len(jobs))
		var msgIDs []string
		for _, i := range order {
			if defs[i], verdicts[i] = e.checkReply(rows, jobs[i]); verdicts[i] == nil {
				msgIDs = append(msgIDs, jobs[i].reply.MessageID)
			}
		}
		first, err := e.inbox.RecordAll(ctx, sqlTx, msgIDs)
		if err != nil {
			return fmt.Errorf("record %d replies in the inbox: %w", len(msgIDs), err)
		}
		for _, i := range order {
			j := jobs[i]
			id := j.reply.MessageID
			var isFirst bool
			switch {
			case verdicts[i] == nil:
				isFirst = first[id]
				first[id] = false // the same message again in this batch is a duplicate
			case !errors.Is(verdicts[i], ErrUntrustedReply):
				continue
			default:
				if defs[i], verdicts[i] = e.checkReply(rows, j); verdicts[i] != nil {
					continue
				}
				if isFirst, err = e.inbox.Record(ctx, sqlTx, id); err != nil {
					return fmt.Errorf("record reply %s in the inbox: %w", id, err)
				}
			}
			if err := e.applyReply(t, rows[j.reply.SagaID], defs[i], j, isFirst); err != nil {
				return err
			}
		}
		return t.flush(ctx)
	})
	if err != nil {
		return nil, fmt.Errorf("apply %d replies: %w", len(jobs), err)
	}
	t.committed(ctx)
	return verdicts, nil
}

// checkReply returns the definition of the saga job's reply is for (locked in rows), or the reply's
// verdict when it cannot be applied: a permanent error (an unknown saga, an untrusted reply) or an
// error to retry later (its definition is not registered here).
func (e *Engine) checkReply(rows map[string]*row, job *replyJob) (*saga.Definition, error) {
	rp := &job.reply
	r, ok := rows[rp.SagaID]
	if !ok {
		return nil, fmt.Errorf("%w: reply %s for unknown saga %s", bus.ErrPermanent, rp.MessageID, rp.SagaID)
	}
	def, err := e.cfg.Definitions.Get(r.inst.Definition, r.inst.Version)
	if err != nil {
		return nil, fmt.Errorf("reply %s for saga %s: %w", rp.MessageID, rp.SagaID, err)
	}
	if err := checkTrust(e.ns(), def, &r.inst, job); err != nil {
		return nil, fmt.Errorf("%w: reply %s for saga %s: %w", bus.ErrPermanent, rp.MessageID, rp.SagaID, err)
	}
	return def, nil
}

// applyReply applies job's checked reply to r (of definition def) inside t; first says whether the
// inbox saw its message id for the first time. The error is a failure of the transaction.
func (e *Engine) applyReply(t *tx, r *row, def *saga.Definition, job *replyJob, first bool) error {
	rp := &job.reply
	ev := saga.Event{
		Kind:         saga.EventReply,
		Time:         t.now,
		Rand:         e.rand(),
		Step:         rp.Step,
		Attempt:      rp.Attempt,
		Compensation: rp.Action == protocol.ActionCompensate,
		Outcome:      saga.Outcome(rp.Outcome),
		Output:       rp.Output,
		Reason:       rp.Reason,
	}
	meta := eventMeta{messageID: rp.MessageID, service: rp.Service, replySpan: job.span}
	if !first {
		t.ignore(r, ev, meta, "duplicate: message "+rp.MessageID+" was already applied")
		return nil
	}
	_, err := t.apply(def, r, ev, meta)
	return err
}

// checkTrust returns an error matching ErrUntrustedReply, naming the mismatch, unless job's reply
// can be a participant's answer to a command inst sent: it arrived on the reply subject of inst's
// definition (in namespace ns), its definition header (and version header, when it has one) names inst's definition
// and version, its step is a step of the definition, and its attempt of that action was sent.
// Replies that pass but are not awaited now (an old attempt, a finished saga) are saga.Apply's to
// reject: they are recorded in the history and ignored.
func checkTrust(ns bus.Namespace, def *saga.Definition, inst *saga.Instance, job *replyJob) error {
	rp := &job.reply
	if want := ns.Subject(protocol.ReplySubject(inst.Definition)); job.subject != want {
		return fmt.Errorf("%w: it arrived on %q, the saga's replies go to %q", ErrUntrustedReply, job.subject, want)
	}
	if rp.Definition != inst.Definition {
		return fmt.Errorf("%w: header %s is %q, the saga runs %q", ErrUntrustedReply, protocol.HeaderDefinition, rp.Definition, inst.Definition)
	}
	if rp.Version != 0 && rp.Version != inst.Version {
		return fmt.Errorf("%w: header %s is %d, the saga runs version %d", ErrUntrustedReply, protocol.HeaderVersion, rp.Version, inst.Version)
	}
	i := def.StepIndex(rp.Step)
	if i < 0 || i >= len(inst.Steps) {
		return fmt.Errorf("%w: step %q is not a step of %s v%d", ErrUntrustedReply, rp.Step, inst.Definition, inst.Version)
	}
	sent := inst.Steps[i].Attempts
	if rp.Action == protocol.ActionCompensate {
		sent = inst.Steps[i].CompensationAttempts
	}
	if rp.Attempt > sent {
		return fmt.Errorf("%w: %s attempt %d of step %q was never sent (%d sent)", ErrUntrustedReply, rp.Action, rp.Attempt, rp.Step, sent)
	}
	return nil
}

// errShutdown is the verdict of a reply handed over after the batcher stopped: it is nacked and
// redelivered to a replica that runs.
var errShutdown = errors.New("engine shutting down")
