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

// replyJob is one parsed reply of a batch.
type replyJob struct {
	reply protocol.Reply
	// subject is the subject the reply arrived on: saga.reply.<definition>.
	subject string
	// span is the span context the reply carried (its participant's span), linked from the step's.
	span trace.SpanContext
}

// handleReplies is the replies consumer's handler: it parses the batch the consumer fetched and
// applies its replies in one transaction (group commit: under load, replies pile up while a batch
// commits, so batches grow by themselves and no delay is added when idle). A reply that cannot be
// parsed, or that is permanently wrong, is dead-lettered with its reason; one that failed for now
// is delivered again.
func (e *Engine) handleReplies(ctx context.Context, batch []bus.Delivery) []bus.Verdict {
	verdicts := make([]bus.Verdict, len(batch))
	jobs := make([]*replyJob, 0, len(batch))
	at := make([]int, 0, len(batch)) // at[k] is the position in batch of jobs[k]
	for i, d := range batch {
		r, err := protocol.ParseReply(&message.Message{UUID: d.ID, Metadata: d.Headers, Payload: d.Payload})
		if err != nil {
			verdicts[i] = bus.ToDeadLetter(err.Error())
			continue
		}
		jobs = append(jobs, &replyJob{reply: r, subject: d.Subject, span: telemetry.SpanContextOf(d.Headers)})
		at = append(at, i)
	}
	if len(jobs) == 0 {
		return verdicts
	}
	for k, err := range e.applyReplies(ctx, jobs) {
		verdicts[at[k]] = e.verdictOf(err)
	}
	return verdicts
}

// verdictOf turns a reply's result into the consumer's verdict: nil acks, an error wrapping
// bus.ErrPermanent dead-letters, any other error delivers the reply again after Config.NakDelay
// (doubled per delivery: a database restarting must not exhaust the deliveries in a moment).
func (e *Engine) verdictOf(err error) bus.Verdict {
	switch {
	case err == nil:
		return bus.Ack()
	case errors.Is(err, bus.ErrPermanent):
		return bus.ToDeadLetter(err.Error())
	default:
		return bus.Retry(e.cfg.NakDelay, err)
	}
}

// applyReplies applies jobs in one transaction and returns each one's result (see
// applyRepliesTx). When that transaction fails it falls back to one transaction per reply, so that
// one poison reply cannot hold back the others.
func (e *Engine) applyReplies(ctx context.Context, jobs []*replyJob) []error {
	verdicts, err := e.applyRepliesTx(ctx, jobs)
	if err == nil {
		return verdicts
	}
	if len(jobs) == 1 {
		return []error{err}
	}
	e.log.WarnContext(ctx, "reply batch failed; applying its replies one by one", "replies", len(jobs), "err", err)
	results := make([]error, len(jobs))
	for i, j := range jobs {
		verdicts, err := e.applyRepliesTx(ctx, []*replyJob{j})
		if err != nil {
			results[i] = err
			continue
		}
		results[i] = verdicts[0]
	}
	return results
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
