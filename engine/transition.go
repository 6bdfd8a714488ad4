package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"go.opentelemetry.io/otel/trace"

	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/protocol"
	"github.com/sagaflow/sagaflow/outbox"
	"github.com/sagaflow/sagaflow/saga"
)

// tx collects what one database transaction writes: the instances it changed, their history and
// the commands they send. Several events, for several sagas, may go into one tx (a reply batch, a
// timer claim); each saga is locked once and its events are applied in order.
type tx struct {
	e       *Engine
	sql     *sqlx.Tx
	now     time.Time
	changed []*row // in lock (id) order
	dirty   map[*row]bool
	history []HistoryEntry
	msgs    []outbox.Envelope
	// nearest is the earliest deadline written, to wake the timers.
	nearest time.Time
	// finished lists the sagas this tx finishes, to wake their waiters.
	finished []*row
	// obs is what to report (spans, metrics, logs) once the tx commits.
	obs []observation
}

// ns is the engine's namespace (Config.Namespace).
func (e *Engine) ns() bus.Namespace { return bus.Namespace(e.cfg.Namespace) }

func (e *Engine) newTx(sqlTx *sqlx.Tx) *tx {
	return &tx{e: e, sql: sqlTx, now: e.cfg.Now().UTC(), dirty: map[*row]bool{}}
}

// eventMeta is what the history records about an event beyond the saga.Event itself.
type eventMeta struct {
	messageID string
	actor     string
	service   string
	// unrecorded leaves a rejected event out of the history.
	unrecorded bool
	// replySpan is the span context a reply carried, linked from the attempt's span.
	replySpan trace.SpanContext
	// detail, when set, is the history detail of an operator's request (a retry's input diff).
	detail json.RawMessage
}

// apply applies ev to r (of definition def) and records it. An event that does not apply is
// recorded as ignored — or, when it reports an effect that nothing will undo, as a late effect
// that puts the saga in the operator's queue — and its rejection returned; r's state is then
// unchanged. Any other error is a bug and aborts the transaction.
func (t *tx) apply(def *saga.Definition, r *row, ev saga.Event, meta eventMeta) (*saga.RejectedError, error) {
	next, actions, err := saga.Apply(def, r.inst, ev)
	var rejected *saga.RejectedError
	if errors.As(err, &rejected) {
		if saga.LateEffect(def, r.inst, ev) {
			t.lateEffect(def, r, ev, meta)
			return rejected, nil
		}
		if !meta.unrecorded {
			t.ignore(r, ev, meta, rejected.Error())
		}
		return rejected, nil
	}
	if err != nil {
		return nil, fmt.Errorf("apply %s to saga %s: %w", ev.Kind, r.inst.ID, err)
	}
	prev := r.inst
	r.inst = next // before recording: a start's entry needs the new id
	if ev.Kind == saga.EventRedrive || ev.Kind == saga.EventRetryStep {
		r.attention = "" // the operator took the saga in hand
	}
	t.observe(def, r, prev, ev, meta)
	if h := eventEntry(ev, meta); h.Kind != "" {
		t.record(r, h)
	}
	var payload []byte
	for _, a := range actions {
		switch a.Kind {
		case saga.ActionSendCommand, saga.ActionSendCompensation:
			if payload == nil {
				if payload, err = json.Marshal(next.Data); err != nil {
					return nil, fmt.Errorf("encode data of saga %s: %w", next.ID, err)
				}
			}
			t.send(def, r, a, payload)
		case saga.ActionScheduleDeadline:
			if t.nearest.IsZero() || a.At.Before(t.nearest) {
				t.nearest = a.At
			}
			if a.Phase == saga.PhaseBackingOff {
				t.record(r, HistoryEntry{Kind: HistoryRetryScheduled, Step: a.Step, Attempt: a.Attempt,
					Action: actionName(a.Compensation), Detail: detail("at", a.At.UTC().Format(time.RFC3339Nano))})
			}
		case saga.ActionFinish:
			t.finished = append(t.finished, r)
			h := HistoryEntry{Kind: HistoryFinished, Outcome: string(a.Status)}
			if a.Status != saga.StatusCompleted && next.LastError != "" {
				h.Detail = detail("last_error", next.LastError)
			}
			t.record(r, h)
		}
	}
	return nil, nil
}

// ignore records an event that did not apply.
func (t *tx) ignore(r *row, ev saga.Event, meta eventMeta, reason string) {
	h := eventEntry(ev, meta)
	h.Kind = HistoryIgnored
	kv := []any{"event", string(ev.Kind), "reason", reason}
	if meta.messageID != "" {
		kv = append(kv, "message_id", meta.messageID)
	}
	h.Detail = detail(kv...)
	t.record(r, h)
}

// lateEffect records a reply that reports an effect nothing will undo (saga.LateEffect), flags the
// saga for an operator and, the first time for its step, counts it. A late success for a step
// whose compensation has run, runs or is queued never gets here: the participant's barrier answers
// a forward command that arrives after its compensation as cancelled, so a forward that did apply
// ran before its compensation, which undoes it; such a reply is merely ignored.
func (t *tx) lateEffect(def *saga.Definition, r *row, ev saga.Event, meta eventMeta) {
	in := &r.inst
	i := def.StepIndex(ev.Step)
	stepStatus := in.Steps[i].Status
	todo := "nothing in the saga undoes this effect: reconcile it by hand"
	if in.Status == saga.StatusFailed && in.Step == i && stepStatus == saga.StepHalted {
		todo = "the halted step applied after all: redrive the saga to go on forward (the participant answers the retry from its record)"
	}
	h := eventEntry(ev, meta)
	h.Kind = HistoryLateEffect
	kv := []any{"status", string(in.Status), "step_status", string(stepStatus), "todo", todo}
	if meta.messageID != "" {
		kv = append(kv, "message_id", meta.messageID)
	}
	if meta.service != "" {
		kv = append(kv, "service", meta.service)
	}
	h.Detail = detail(kv...)
	t.record(r, h)
	reason := "late effect of step " + strconv.Quote(ev.Step) + " (" + string(stepStatus) + ") on a " + string(in.Status) + " saga: " + todo
	if r.attention == reason {
		return // the same effect, answered again for another attempt: recorded, counted once
	}
	r.attention = reason
	t.obs = append(t.obs, observation{kind: obsLateEffect, r: r, def: def, step: ev.Step, attempt: ev.Attempt, reason: reason})
}

// record appends a history entry for r and marks r to be stored (its history sequence moved).
func (t *tx) record(r *row, h HistoryEntry) {
	r.historySeq++
	h.SagaID = r.inst.ID
	h.Seq = r.historySeq
	h.At = t.now
	t.history = append(t.history, h)
	if !t.dirty[r] {
		t.dirty[r] = true
		t.changed = append(t.changed, r)
	}
}

// send puts the command of action a in the outbox batch and records it.
func (t *tx) send(def *saga.Definition, r *row, a saga.Action, payload []byte) {
	in := &r.inst
	action := protocol.ActionForward
	if a.Compensation {
		action = protocol.ActionCompensate
	}
	cmd := protocol.Command{
		MessageID:   commandID(in.ID, a.Step, string(action), a.Attempt),
		SagaID:      in.ID,
		Definition:  def.Name,
		Version:     def.Version,
		BusinessKey: in.BusinessKey,
		Step:        a.Step,
		Attempt:     a.Attempt,
		Generation:  a.Generation,
		Action:      action,
		Service:     a.Service,
		Name:        a.Command,
		ReplyTo:     t.e.ns().Subject(protocol.ReplySubject(def.Name)),
		Payload:     payload,
		Time:        t.now,
	}
	msg := cmd.Message()
	if tp := r.commandTraceparent(a.Step, string(action), a.Attempt); tp != "" {
		msg.Metadata.Set(protocol.HeaderTraceparent, tp)
	}
	t.msgs = append(t.msgs, outbox.Envelope{Subject: t.e.ns().Subject(cmd.Subject()), Message: msg})
	t.observeSend(def, r, a)
	t.record(r, HistoryEntry{Kind: HistoryCommand, Step: a.Step, Attempt: a.Attempt, Action: string(action),
		Detail: detail("service", a.Service, "command", a.Command, "message_id", cmd.MessageID,
			"deadline", in.Deadline.UTC().Format(time.RFC3339Nano))})
}

// flush writes every changed instance, the history and the outbox messages. Call it once, after
// the last apply and before commit.
func (t *tx) flush(ctx context.Context) error {
	s := t.e.store
	if err := t.collapseIgnored(ctx); err != nil {
		return err
	}
	stored := make([]*row, 0, len(t.changed))
	for _, r := range t.changed {
		if !r.isNew { // a new one was inserted by the caller
			stored = append(stored, r)
		}
	}
	if err := s.updateAll(ctx, t.sql, stored); err != nil {
		return err
	}
	if err := s.appendHistory(ctx, t.sql, t.history); err != nil {
		return err
	}
	if err := t.writeOutbox(ctx); err != nil {
		return err
	}
	if !t.nearest.IsZero() && t.e.cfg.ListenDSN != "" && t.nearest.Before(t.now.Add(t.e.cfg.TimerInterval)) {
		return s.notifyTimers(ctx, t.sql)
	}
	return nil
}

// writeOutbox writes the commands in one call, each to its own service's subject.
func (t *tx) writeOutbox(ctx context.Context) error {
	if len(t.msgs) == 0 {
		return nil
	}
	if err := t.e.outbox.WriteAll(ctx, t.sql, t.msgs); err != nil {
		return fmt.Errorf("write %d commands to the outbox: %w", len(t.msgs), err)
	}
	return nil
}

// committed runs after a successful commit: it nudges the relay and the timers, and reports the
// transaction's spans, metrics and logs.
func (t *tx) committed(ctx context.Context) {
	t.report(ctx)
	if len(t.msgs) > 0 && t.e.cfg.Relay != nil {
		t.e.cfg.Relay.CommittedAll(t.msgs)
	}
	if len(t.msgs) > 0 && t.e.cfg.OnCommit != nil {
		t.e.cfg.OnCommit()
	}
	if !t.nearest.IsZero() {
		t.e.timers.wakeFor(t.nearest)
	}
	t.e.waiters.notify(t.finished)
}

// eventEntry is the history entry of an applied event; its Kind is empty when the event needs none.
func eventEntry(ev saga.Event, meta eventMeta) HistoryEntry {
	h := HistoryEntry{Actor: meta.actor}
	switch ev.Kind {
	case saga.EventStart:
		h.Kind = HistoryStarted
		h.Detail = detail("business_key", ev.BusinessKey)
	case saga.EventReply:
		h.Kind, h.Step, h.Attempt, h.Action, h.Outcome = HistoryReply, ev.Step, ev.Attempt, actionName(ev.Compensation), string(ev.Outcome)
		kv := []any{"message_id", meta.messageID}
		if ev.Reason != "" {
			kv = append(kv, "reason", ev.Reason)
		}
		if meta.service != "" {
			kv = append(kv, "service", meta.service)
		}
		h.Detail = detail(kv...)
	case saga.EventDeadline:
		if ev.Phase == saga.PhaseBackingOff {
			// The backoff ended: the command entry of the next attempt follows and says it all.
			return HistoryEntry{}
		}
		h.Kind, h.Step, h.Attempt, h.Action = HistoryTimeout, ev.Step, ev.Attempt, actionName(ev.Compensation)
	case saga.EventCancel:
		h.Kind, h.Actor = HistoryCancel, ev.Actor
		h.Detail = detail("reason", ev.Reason)
	case saga.EventRedrive:
		h.Kind, h.Actor = HistoryRedrive, ev.Actor
		h.Detail = detail("reason", ev.Reason)
	case saga.EventRetryStep:
		h.Kind, h.Actor, h.Detail = HistoryRetryStep, ev.Actor, meta.detail
	}
	return h
}

func actionName(compensation bool) string {
	if compensation {
		return string(protocol.ActionCompensate)
	}
	return string(protocol.ActionForward)
}

// detail builds a history detail object from key, value pairs (string keys; values JSON-encodable).
func detail(kv ...any) json.RawMessage {
	m := make(map[string]any, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	b, _ := json.Marshal(m) // strings and times only: cannot fail
	return b
}

// commandNamespace scopes the deterministic ids of commands.
var commandNamespace = uuid.MustParse("6b1d5c2e-8f0a-4f57-9a51-3c0e2d7b9e41")

// commandID is the message id of the command for (saga, step, action, attempt): deterministic, so a
// re-sent identical action is dropped by JetStream's duplicate window, and a UUID, as the outbox
// expects.
func commandID(sagaID, step, action string, attempt int) string {
	return uuid.NewSHA1(commandNamespace, []byte(sagaID+"\x00"+step+"\x00"+action+"\x00"+strconv.Itoa(attempt))).String()
}
