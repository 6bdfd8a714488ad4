package participant

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"go.opentelemetry.io/otel/trace"

	"github.com/sagaflow/sagaflow/internal/protocol"
	"github.com/sagaflow/sagaflow/internal/sqldb"
	"github.com/sagaflow/sagaflow/internal/telemetry"
)

// job is one received command waiting for its transaction.
type job struct {
	cmd     protocol.Command
	headers map[string]string
	handler Handler
	// span is the command's consumer span: the handler runs under it and the reply carries it.
	span trace.Span
	// outcome is the reply's outcome, set before done is sent.
	outcome protocol.Outcome
	// events are the domain events the handler wrote with Command.Publish in this run.
	events replies
	// at is the job's position in the consumer's batch; delivery its JetStream delivery count.
	at, delivery int
}

// traceID is the trace id of j's span, for logs.
func (j *job) traceID() string {
	if j.span == nil {
		return ""
	}
	return j.span.SpanContext().TraceID().String()
}

// context returns ctx carrying j's span, for the handler and the reply.
func (j *job) context(ctx context.Context) context.Context {
	if j.span == nil {
		return ctx
	}
	return trace.ContextWithSpan(ctx, j.span)
}

// process handles batch (the valid commands of one consumer batch: the hot path, one transaction
// for many commands) and returns each job's result. It sorts batch in place, in barrier-key order
// so that two replicas lock barrier rows in the same order; the results follow that order. If the
// shared transaction fails as a whole (a commit error, a deadlock, a broken connection), every
// command is retried in a transaction of its own, so one bad command cannot keep failing the
// others.
func (p *Participant) process(ctx context.Context, batch []*job) []error {
	slices.SortFunc(batch, func(a, b *job) int {
		return cmp.Or(cmp.Compare(a.cmd.SagaID, b.cmd.SagaID), cmp.Compare(a.cmd.Step, b.cmd.Step),
			cmp.Compare(a.cmd.Action, b.cmd.Action))
	})
	results, sent, err := p.handleTx(ctx, batch)
	if err == nil {
		p.committed(sent)
	} else {
		results = make([]error, len(batch))
		if len(batch) == 1 {
			results[0] = err
		} else {
			p.log.WarnContext(ctx, "batch transaction failed, handling its commands one by one", "batch", len(batch), "err", err)
			for i, j := range batch {
				results[i] = p.single(ctx, j)
			}
		}
	}
	p.news(ctx, batch, results)
	return results
}

// maxNewsReason bounds the handler error text sent to the orchestrator.
const maxNewsReason = 1024

// news tells the orchestrator, for each command whose handling failed (a transient error, a panic,
// a Reject), why: a reply with outcome "retrying" and the error as its reason, which the
// orchestrator records as the step's last error ("sagaflow show" says why an attempt is slow or
// timed out) without changing the saga. It is written in one transaction of its own and is best
// effort: a failure to write it is logged and changes nothing else.
func (p *Participant) news(ctx context.Context, batch []*job, results []error) {
	sent := replies{}
	now := time.Now()
	for i, j := range batch {
		err := results[i]
		if err == nil {
			continue
		}
		r := j.cmd.Answer(protocol.OutcomeRetrying)
		r.MessageID = uuid.Must(uuid.NewV7()).String()
		r.Reason = err.Error()
		if errors.Is(err, ErrRejected) {
			r.Reason = "dead-lettered: " + r.Reason
		}
		if len(r.Reason) > maxNewsReason {
			r.Reason = strings.ToValidUTF8(r.Reason[:maxNewsReason], "") + "…"
		}
		r.Service, r.Time = p.cfg.Service, now
		msg, err := r.Message()
		if err != nil {
			continue
		}
		telemetry.Inject(j.context(ctx), msg.Metadata)
		sent[j.cmd.ReplyTo] = append(sent[j.cmd.ReplyTo], msg)
	}
	if len(sent) == 0 {
		return
	}
	err := sqldb.InTx(ctx, p.db, func(tx *sqlx.Tx) error {
		for subject, msgs := range sent {
			if err := p.outbox.Write(ctx, tx, subject, msgs...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		p.log.WarnContext(ctx, "tell the orchestrator why commands failed", "err", err)
		return
	}
	p.committed(sent)
}

// single handles j in a transaction of its own.
func (p *Participant) single(ctx context.Context, j *job) error {
	results, sent, err := p.handleTx(ctx, []*job{j})
	if err != nil {
		return err
	}
	p.committed(sent)
	return results[0]
}

// replies are the reply messages a transaction wrote to the outbox, by subject.
type replies map[string][]*message.Message

// answer is what a job gets: a result to reply with, or a transient error.
type answer struct {
	res Result
	err error
}

// handleTx handles batch in one transaction and returns what handleBatch does.
//
// Handlers first run without savepoints: a savepoint costs a round trip before and after each
// handler, and each one that writes is a subtransaction with a transaction id of its own (past 64
// in one transaction, every snapshot taken on the server overflows to pg_subtrans). When a handler
// fails (an error, a panic, a Reject, a Failure), its writes cannot be undone alone: the
// transaction is rolled back and the batch handled again in a new one, in which that handler is
// not called again (its answer stands, as if its writes had been rolled back to a savepoint) and
// every handler after it runs under a savepoint. The handlers before it run again, since their
// writes went with the rollback. Should one of those fail now (handlers need not be
// deterministic), a third pass puts every run under a savepoint. A lone command whose handler
// returned an error needs no second pass: nothing of its transaction was to be kept.
func (p *Participant) handleTx(ctx context.Context, batch []*job) ([]error, replies, error) {
	ps := &pass{safeFrom: math.MaxInt, failed: map[*job]answer{}}
	for {
		var results []error
		var sent replies
		err := sqldb.InTx(ctx, p.db, func(tx *sqlx.Tx) (err error) {
			ps.runs = 0
			results, sent, err = p.handleBatch(ctx, tx, batch, ps)
			return err
		})
		var redo *redoError
		if !errors.As(err, &redo) {
			return results, sent, err
		}
		if redo.job != nil {
			ps.failed[redo.job] = redo.answer
			if len(batch) == 1 && redo.answer.err != nil {
				return []error{redo.answer.err}, nil, nil
			}
		}
		p.log.DebugContext(ctx, "handler failed without a savepoint; handling the batch again", "batch", len(batch), "err", redo.cause())
		if ps.safeFrom == math.MaxInt {
			ps.safeFrom = redo.at
		} else {
			ps.safeFrom = 0
		}
	}
}

// pass is how one transaction of handleTx runs handlers: the safeFrom-th run and those after it
// (counted in the order the batch runs them) take a savepoint, and the jobs whose handler failed
// in an earlier pass get that answer again without a call.
type pass struct {
	safeFrom int
	runs     int
	failed   map[*job]answer
}

// next returns the index of the next run.
func (s *pass) next() int {
	s.runs++
	return s.runs - 1
}

// safe reports whether run at takes a savepoint.
func (s *pass) safe(at int) bool { return at >= s.safeFrom }

// redoError aborts a transaction in which run at failed without a savepoint (see handleTx). job
// and answer are the failed handler's job and answer; job is nil when a statement around the
// handler failed.
type redoError struct {
	at     int
	job    *job
	answer answer
	err    error
}

func (e *redoError) cause() error {
	if e.err != nil {
		return e.err
	}
	if e.answer.err != nil {
		return e.answer.err
	}
	return errFailureOutcome
}

func (e *redoError) Error() string {
	return fmt.Sprintf("handler run %d failed without a savepoint: %v", e.at, e.cause())
}

// errFailureOutcome is the cause of a redo for a handler that answered Failure.
var errFailureOutcome = errors.New("handler answered failure")

// handleBatch handles batch inside tx, each handler run under a savepoint or not as ps says. It
// returns one error per job (nil: its reply is written and commits with tx; else its work was
// rolled back and it must be redelivered), or an error that leaves tx unusable (a *redoError when
// a handler without a savepoint failed).
//
// Forward commands are handled together: one statement claims every forward key of the batch in
// the barrier, one reads the records of those done before, each claimed command runs its handler,
// and one statement records all outcomes. Compensations follow, one by one (they are rarer and
// read their forward's outcome, which may have been decided in this same batch). Finally one
// statement per reply subject writes every reply to the outbox.
func (p *Participant) handleBatch(ctx context.Context, tx *sqlx.Tx, batch []*job, ps *pass) ([]error, replies, error) {
	b := barrier{tx: tx}
	answers := make([]answer, len(batch))
	owner := map[key]int{} // the job that handles a key; later jobs with the same key copy its answer
	var keys []key
	for i, j := range batch {
		if j.cmd.Action != protocol.ActionForward {
			continue
		}
		if _, dup := owner[keyOf(&j.cmd)]; !dup {
			owner[keyOf(&j.cmd)] = i
			keys = append(keys, keyOf(&j.cmd))
		}
	}
	if len(keys) > 0 {
		if err := p.forwards(ctx, b, ps, batch, answers, owner, keys); err != nil {
			return nil, nil, err
		}
	}
	for i, j := range batch {
		if j.cmd.Action == protocol.ActionCompensate {
			var err error
			if answers[i], err = p.compensation(ctx, b, ps, j); err != nil {
				return nil, nil, err
			}
		} else if o := owner[keyOf(&j.cmd)]; o != i {
			answers[i] = answers[o]
		}
	}
	return p.replies(ctx, tx, batch, answers)
}

func (p *Participant) forwards(ctx context.Context, b barrier, ps *pass, batch []*job, answers []answer, owner map[key]int, keys []key) error {
	claimed, err := b.claim(ctx, protocol.ActionForward, outcomePending, "", keys)
	if err != nil {
		return err
	}
	var earlier []key
	for _, k := range keys {
		if !claimed[k] {
			earlier = append(earlier, k)
		}
	}
	recs, err := b.load(ctx, protocol.ActionForward, earlier)
	if err != nil {
		return err
	}
	var outcomes []decided
	for _, k := range keys {
		i, j := owner[k], batch[owner[k]]
		if !claimed[k] {
			// Done before (a duplicate, a redelivery, a retry after a lost reply), or compensated
			// before it arrived (the tombstone answers cancelled): answer from the record.
			rec, ok := recs[k]
			if !ok {
				answers[i].err = fmt.Errorf("%w: step %s of saga %s neither claimed nor recorded", ErrBarrierState, k.step, k.sagaID)
				continue
			}
			answers[i].res, answers[i].err = rec.result()
			p.log.DebugContext(ctx, "command answered from barrier", "saga_id", k.sagaID, "definition", j.cmd.Definition, "step", k.step,
				"trace_id", j.traceID(), "attempt", j.cmd.Attempt)
			continue
		}
		res, jobErr, err := p.run(ctx, b.tx, ps, j, ps.next())
		if err != nil {
			return err
		}
		if jobErr != nil {
			// Give the key back, so the redelivery runs the handler again.
			if err := b.forget(ctx, k, protocol.ActionForward); err != nil {
				return err
			}
			answers[i].err = jobErr
			continue
		}
		answers[i].res = res
		outcomes = append(outcomes, decided{key: k, action: protocol.ActionForward, res: res})
	}
	return b.record(ctx, outcomes)
}

// compensation handles one compensation, under a savepoint if ps says so. The returned error
// leaves the transaction unusable (a *redoError when the compensation failed without a savepoint);
// the job's own failure is in the answer.
func (p *Participant) compensation(ctx context.Context, b barrier, ps *pass, j *job) (answer, error) {
	at := ps.next()
	if !ps.safe(at) {
		res, err := p.compensate1(ctx, b, ps, j, at)
		var redo *redoError
		if errors.As(err, &redo) {
			return answer{}, redo
		}
		if err != nil {
			return answer{}, &redoError{at: at, err: err}
		}
		return answer{res: res}, nil
	}
	if _, err := b.tx.ExecContext(ctx, "SAVEPOINT sagaflow_cmd"); err != nil {
		return answer{}, fmt.Errorf("savepoint: %w", err)
	}
	res, jobErr := p.compensate1(ctx, b, ps, j, at)
	if jobErr != nil {
		if _, err := b.tx.ExecContext(ctx, "ROLLBACK TO SAVEPOINT sagaflow_cmd"); err != nil {
			return answer{}, fmt.Errorf("roll back to savepoint after %w: %w", jobErr, err)
		}
	}
	if _, err := b.tx.ExecContext(ctx, "RELEASE SAVEPOINT sagaflow_cmd"); err != nil {
		return answer{}, fmt.Errorf("release savepoint: %w", err)
	}
	return answer{res: res, err: jobErr}, nil
}

// compensate1 handles compensation j, run at of the transaction (see pass). Any error leaves the
// transaction to be rolled back to before it.
func (p *Participant) compensate1(ctx context.Context, b barrier, ps *pass, j *job, at int) (Result, error) {
	k := keyOf(&j.cmd)
	// Claim the forward key first, with a tombstone: if that works, the forward never ran here (a
	// null compensation), and the tombstone makes a late forward refuse itself. Forward and
	// compensation both take the forward key before anything else, so on two replicas they
	// serialise on it instead of passing each other.
	tomb, err := b.claim(ctx, protocol.ActionForward, string(protocol.OutcomeCancelled), reasonTombstone, []key{k})
	if err != nil {
		return Result{}, err
	}
	first, err := b.claim(ctx, protocol.ActionCompensate, outcomePending, "", []key{k})
	if err != nil {
		return Result{}, err
	}
	if !first[k] {
		recs, err := b.load(ctx, protocol.ActionCompensate, []key{k})
		if err != nil {
			return Result{}, err
		}
		return recs[k].result()
	}
	res := Success(nil)
	if !tomb[k] {
		recs, err := b.load(ctx, protocol.ActionForward, []key{k})
		if err != nil {
			return Result{}, err
		}
		// Only a forward that succeeded left an effect; a failed or refused one has nothing to undo.
		if recs[k].Outcome == string(protocol.OutcomeSuccess) {
			var jobErr, txErr error
			if res, jobErr, txErr = p.run(ctx, b.tx, ps, j, at); txErr != nil {
				return Result{}, txErr
			} else if jobErr != nil {
				return Result{}, jobErr
			}
		}
	}
	if res.outcome == protocol.OutcomeFailure {
		// A failed compensation is retried by the orchestrator: keep no record, so the retry runs
		// the handler again, and answer the failure.
		return res, b.forget(ctx, k, protocol.ActionCompensate)
	}
	return res, b.record(ctx, []decided{{key: k, action: protocol.ActionCompensate, res: res}})
}

// run calls j's handler as run at of the transaction, under a savepoint if ps says so. jobErr is the handler's error or panic (its writes are rolled back); on a Failure result
// its writes are rolled back too. txErr means tx is unusable: without a savepoint, a failure is a
// *redoError. A job whose handler failed in an earlier pass gets that answer again, uncalled.
func (p *Participant) run(ctx context.Context, tx *sqlx.Tx, ps *pass, j *job, at int) (res Result, jobErr, txErr error) {
	safe := ps.safe(at)
	if a, ok := ps.failed[j]; ok {
		j.events = nil
		return a.res, a.err, nil
	}
	if safe {
		if _, err := tx.ExecContext(ctx, "SAVEPOINT sagaflow_handler"); err != nil {
			return Result{}, nil, fmt.Errorf("savepoint before handler: %w", err)
		}
	}
	j.events = nil
	cmd := newCommand(j.cmd, j.headers)
	cmd.publish = func(ctx context.Context, tx *sqlx.Tx, subject string, msgs []*message.Message) error {
		if err := p.outbox.Write(ctx, tx, subject, msgs...); err != nil {
			return err
		}
		if j.events == nil {
			j.events = replies{}
		}
		j.events[subject] = append(j.events[subject], msgs...)
		return nil
	}
	res, jobErr = call(j.context(ctx), tx, j.handler, cmd)
	if jobErr == nil {
		jobErr = res.err
	}
	if !safe {
		if jobErr != nil || res.outcome == protocol.OutcomeFailure {
			return Result{}, nil, &redoError{at: at, job: j, answer: answer{res: res, err: jobErr}}
		}
		return res, nil, nil
	}
	if jobErr != nil || res.outcome == protocol.OutcomeFailure {
		j.events = nil // rolled back with the handler's other writes
		if _, err := tx.ExecContext(ctx, "ROLLBACK TO SAVEPOINT sagaflow_handler"); err != nil {
			return Result{}, nil, fmt.Errorf("roll back handler of step %s: %w", j.cmd.Step, err)
		}
	}
	if _, err := tx.ExecContext(ctx, "RELEASE SAVEPOINT sagaflow_handler"); err != nil {
		return Result{}, nil, fmt.Errorf("release savepoint after handler: %w", err)
	}
	return res, jobErr, nil
}

func call(ctx context.Context, tx *sqlx.Tx, h Handler, cmd Command) (res Result, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrPanic, r)
		}
	}()
	return h(ctx, tx, cmd)
}

// replies writes the answered jobs' replies to the outbox and returns each job's error.
//
// Each reply is a new message (new id) that echoes its command's attempt, so the orchestrator takes
// a replayed answer as the answer to the attempt it is waiting for.
func (p *Participant) replies(ctx context.Context, tx *sqlx.Tx, batch []*job, answers []answer) ([]error, replies, error) {
	results := make([]error, len(batch))
	bySubject := replies{}
	var subjects []string
	now := time.Now()
	for i, j := range batch {
		if answers[i].err != nil {
			results[i] = answers[i].err
			continue
		}
		res := answers[i].res
		r := j.cmd.Answer(res.outcome)
		r.MessageID = uuid.Must(uuid.NewV7()).String()
		r.Output, r.Reason = res.output, res.reason
		r.Service = p.cfg.Service
		r.Time = now
		msg, err := r.Message()
		if err != nil {
			results[i] = err
			continue
		}
		telemetry.Inject(j.context(ctx), msg.Metadata)
		j.outcome = res.outcome
		if _, ok := bySubject[j.cmd.ReplyTo]; !ok {
			subjects = append(subjects, j.cmd.ReplyTo)
		}
		bySubject[j.cmd.ReplyTo] = append(bySubject[j.cmd.ReplyTo], msg)
	}
	for _, s := range subjects {
		if err := p.outbox.Write(ctx, tx, s, bySubject[s]...); err != nil {
			return nil, nil, fmt.Errorf("write %d replies to outbox: %w", len(bySubject[s]), err)
		}
	}
	// The domain events the handlers published are in the outbox already; they leave with the
	// replies once the transaction commits.
	for i, j := range batch {
		if answers[i].err != nil {
			continue
		}
		for subject, msgs := range j.events {
			bySubject[subject] = append(bySubject[subject], msgs...)
		}
	}
	return results, bySubject, nil
}
