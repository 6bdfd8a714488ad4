package engine

import (
	"encoding/json"
	"time"

	"github.com/sagaflow/sagaflow/saga"
)

// Instance is a saga instance as the engine stores it: the state machine's saga.Instance (its
// fields are inlined in JSON) plus what the store keeps beside it. It is a plain value, safe to
// render as JSON for the HTTP API and the CLI.
type Instance struct {
	saga.Instance
	// TraceID is the W3C trace id (32 hex digits) generated at start; every command of the saga
	// carries it in its traceparent header.
	TraceID string `json:"trace_id,omitempty"`
	// IdempotencyKey is the key the saga was started with (StartOptions.IdempotencyKey), if any.
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	// RowVersion counts the transactions that wrote the instance (optimistic concurrency).
	RowVersion int64 `json:"row_version"`
	// NeedsAttention puts the instance in the operator's queue whatever its status: something
	// happened that the saga cannot account for, such as a late reply reporting an effect that
	// nothing will undo (see HistoryLateEffect). Engine.Resolve, or a redrive, clears it.
	NeedsAttention bool `json:"needs_attention,omitempty"`
	// Attention says why NeedsAttention is set, for people; empty when it is not.
	Attention string `json:"attention,omitempty"`
}

// StartOptions are the optional knobs of Start.
type StartOptions struct {
	// Version of the definition to start; 0 means the latest registered version.
	Version int
	// IdempotencyKey, when set, makes Start return the id of the instance already started with the
	// same key for the same definition instead of starting another one.
	IdempotencyKey string
	// Actor names who started the saga, for the history (for example "cli:alice" or
	// "trigger events.order.placed").
	Actor string
}

// Filter selects the instances List returns. Zero fields do not filter.
type Filter struct {
	// Definition keeps instances of the definition with this name.
	Definition string
	// Status keeps instances with this status (running, compensating, completed, compensated, failed).
	Status string
	// BusinessKey keeps instances with this business key.
	BusinessKey string
	// NeedsAttention keeps only the instances in the operator's queue (Instance.NeedsAttention).
	NeedsAttention bool
	// Version keeps instances of this version of the definition (0: every version).
	Version int
	// StartedAfter keeps instances started at or after this time (zero: no lower bound).
	StartedAfter time.Time
	// StartedBefore keeps instances started before this time (zero: no upper bound).
	StartedBefore time.Time
	// Limit caps the number of instances returned: default 100, at most 1000.
	Limit int
	// Before is a cursor: only instances whose id sorts before it are returned. Pass the id of the
	// last instance of a page to get the next one (ids are UUIDv7, so pages go from newest to oldest).
	Before string
}

// Summary is what a list shows of an instance: everything but its data (input and step outputs)
// and per-step progress, which Engine.Get returns. A summary's size does not depend on the size
// of the saga's input, so a page of them is small whatever the sagas carry.
type Summary struct {
	ID          string      `json:"id"`
	Definition  string      `json:"definition"`
	Version     int         `json:"version"`
	BusinessKey string      `json:"business_key,omitempty"`
	Status      saga.Status `json:"status"`
	// Step is the index of the current step (see saga.Instance.Step) and StepName its name in the
	// definition (empty when the definition version is no longer registered).
	Step     int    `json:"step"`
	StepName string `json:"step_name,omitempty"`
	// Attempt is the attempt number of the current action of Step (saga.Instance.Attempt).
	Attempt int `json:"attempt"`
	// LastError is the saga's most recent error (saga.Instance.LastError).
	LastError string `json:"last_error,omitempty"`
	// Deadline is the pending deadline of an unfinished saga; zero once finished.
	Deadline   time.Time `json:"deadline,omitzero"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	TraceID    string    `json:"trace_id,omitempty"`
	// NeedsAttention and Attention: see Instance.
	NeedsAttention bool   `json:"needs_attention,omitempty"`
	Attention      string `json:"attention,omitempty"`
}

// StatusCounts is how many instances a filter selects, by status.
type StatusCounts map[saga.Status]int64

// HistoryKind says what a history entry records.
type HistoryKind string

// The kinds of history entries, in the order a saga usually produces them.
const (
	// HistoryStarted: the saga started (Actor says who; Detail holds the business key, version and
	// idempotency key).
	HistoryStarted HistoryKind = "started"
	// HistoryCommand: a command (Action "forward") or compensation (Action "compensate") was put in
	// the outbox; Detail holds the service, the command, the message id and the reply deadline.
	HistoryCommand HistoryKind = "command"
	// HistoryReply: a participant's reply was applied; Outcome is success, failure or cancelled and
	// Detail holds the reason and the message id. Outcome retrying is news, not an answer: the
	// participant's handler failed on that attempt (Detail's reason) and it will be redelivered.
	HistoryReply HistoryKind = "reply"
	// HistoryTimeout: the awaited reply of Step's Attempt did not arrive before its deadline.
	HistoryTimeout HistoryKind = "timeout"
	// HistoryRetryScheduled: the next attempt (Attempt) of Step will be sent at Detail's "at".
	HistoryRetryScheduled HistoryKind = "retry_scheduled"
	// HistoryCancel: an operator cancelled the saga (Actor, Detail's "reason").
	HistoryCancel HistoryKind = "cancel"
	// HistoryRedrive: an operator redrove the failed saga (Actor, Detail's "reason").
	HistoryRedrive HistoryKind = "redrive"
	// HistoryRetryStep: an operator retried the failed saga's halted step (Engine.RetryStep); Actor
	// says who, Detail holds the reason, the step, its new generation and, when the input changed,
	// the patch or replacement given and the input before and after.
	HistoryRetryStep HistoryKind = "retry_step"
	// HistoryFinished: the saga finished; Outcome is its final status.
	HistoryFinished HistoryKind = "finished"
	// HistoryLateEffect: a reply that did not apply reported an effect that nothing will undo: a
	// forward success, on a finished or compensating saga, for a step that neither completed nor is
	// compensated (saga.LateEffect); for example a step halted after timing out on every attempt
	// whose service came back and ran the queued command. Detail holds the message id, the saga's
	// status and what to do; the instance is flagged NeedsAttention and sagaflow.late_effects counts it.
	HistoryLateEffect HistoryKind = "late_effect"
	// HistoryResolved: an operator took the saga out of the queue (Engine.Resolve); Actor says who,
	// Detail holds the reason and the attention it cleared.
	HistoryResolved HistoryKind = "resolved"
	// HistoryIgnored: a reply or deadline that did not apply (stale, duplicate, for a finished saga)
	// was recorded and acknowledged; Detail's "reason" says why.
	HistoryIgnored HistoryKind = "ignored"
)

// HistoryParams selects a page of an instance's history (Engine.HistoryPage).
type HistoryParams struct {
	// After is the cursor: only entries whose Seq is greater are returned. 0 starts at the
	// beginning.
	After int64
	// Limit is the most entries returned; 0 means all.
	Limit int
}

// HistoryEntry is one line of an instance's append-only timeline.
type HistoryEntry struct {
	// SagaID is the instance the entry belongs to.
	SagaID string `json:"saga_id" db:"saga_id"`
	// Seq numbers the instance's entries from 1, without gaps; (SagaID, Seq) is unique.
	Seq int64 `json:"seq" db:"seq"`
	// At is when it happened (the engine's clock).
	At time.Time `json:"at" db:"at"`
	// Kind says what happened.
	Kind HistoryKind `json:"kind" db:"kind"`
	// Step, Attempt and Action ("forward" or "compensate") say which step action it concerns, if any.
	Step    string `json:"step,omitempty" db:"step"`
	Attempt int    `json:"attempt,omitempty" db:"attempt"`
	Action  string `json:"action,omitempty" db:"action"`
	// Outcome is a reply's outcome, or a finished saga's status.
	Outcome string `json:"outcome,omitempty" db:"outcome"`
	// Actor names the operator or trigger behind a start, cancel or redrive.
	Actor string `json:"actor,omitempty" db:"actor"`
	// Detail holds the kind-specific details as a JSON object, or nothing.
	Detail json.RawMessage `json:"detail,omitempty" db:"detail"`
}
