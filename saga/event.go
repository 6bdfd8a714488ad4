package saga

import (
	"encoding/json"
	"time"
)

// EventKind says what happened to a saga.
type EventKind string

const (
	// EventStart starts a new saga: Apply is given the zero Instance. It uses ID, BusinessKey and
	// Input.
	EventStart EventKind = "start"
	// EventReply is a participant's reply to a command or compensation. It uses Step, Attempt,
	// Compensation, Outcome, Output and Reason.
	EventReply EventKind = "reply"
	// EventDeadline says the instance's pending deadline has passed. It uses Step, Attempt,
	// Compensation and Phase, copied from the ActionScheduleDeadline (or built by
	// Instance.DeadlineEvent), which identify the deadline, so a duplicate or stale one is
	// recognised.
	EventDeadline EventKind = "deadline"
	// EventCancel is an operator's request to stop a running saga and undo what it did. It uses
	// Actor and Reason.
	EventCancel EventKind = "cancel"
	// EventRedrive is an operator's request to resume a failed saga's compensation with a fresh
	// retry budget. It uses Actor and Reason.
	EventRedrive EventKind = "redrive"
	// EventRetryStep is an operator's request to retry the halted forward step of a failed saga
	// ("fix and continue"), optionally with a corrected saga input. It uses Input (the new input,
	// empty to keep the current one), Actor and Reason. See Apply for the states it applies to.
	EventRetryStep EventKind = "retry_step"
)

// Outcome is a participant's answer to a command.
type Outcome string

const (
	// OutcomeSuccess means the action applied; a forward step's Output is merged into the saga's
	// data under the step's name.
	OutcomeSuccess Outcome = "success"
	// OutcomeFailure is a business failure: the forward action did not apply and is not retried;
	// the saga compensates the steps before it. For a compensation it counts as a failed attempt,
	// retried within the compensation's budget.
	OutcomeFailure Outcome = "failure"
	// OutcomeCancelled means the participant refused the command because the step was already
	// compensated there (a "hanging" command, DESIGN.md "Exactly once"). A forward step treats it
	// as a business failure; a compensation as a failed attempt.
	OutcomeCancelled Outcome = "cancelled"
	// OutcomeRetrying is not an answer but news: the participant could not apply the awaited
	// attempt this time (its handler returned a transient error, in Reason, or refused the command
	// to the dead-letter stream) and the command will be redelivered (or was dead-lettered). Nothing
	// changes but the step's LastError, so an operator sees why the attempt is slow or timed out.
	OutcomeRetrying Outcome = "retrying"
)

// Event is something that happened to a saga, fed to Apply. Time and randomness come inside it, so
// Apply is deterministic: the same definition, instance and event always give the same result.
//
// Apply keeps references to Input and Output in the instance it returns; the caller must not
// modify them afterwards.
type Event struct {
	// Kind says which of the fields below apply.
	Kind EventKind `json:"kind"`
	// Time is the current time; it must not be zero. New deadlines are computed from it.
	Time time.Time `json:"time"`
	// Rand is a random number in [0, 1), used to jitter retry backoffs.
	Rand float64 `json:"rand,omitempty"`

	// ID identifies the new saga (EventStart); it must not be empty.
	ID string `json:"id,omitempty"`
	// BusinessKey is the new saga's business key (EventStart), optional.
	BusinessKey string `json:"business_key,omitempty"`
	// Input is the new saga's input (EventStart): valid JSON, or empty for JSON null. For
	// EventRetryStep it replaces the saga's input when not empty.
	Input json.RawMessage `json:"input,omitempty"`

	// Step names the step a reply or deadline is for (EventReply, EventDeadline).
	Step string `json:"step,omitempty"`
	// Attempt is the attempt number a reply or deadline is for (EventReply, EventDeadline).
	Attempt int `json:"attempt,omitempty"`
	// Compensation says whether a reply or deadline is for the step's compensation rather than its
	// forward command (EventReply, EventDeadline).
	Compensation bool `json:"compensation,omitempty"`
	// Outcome is the participant's answer (EventReply).
	Outcome Outcome `json:"outcome,omitempty"`
	// Output is a success reply's output (EventReply): valid JSON, or empty for JSON null.
	Output json.RawMessage `json:"output,omitempty"`
	// Phase says which deadline fired (EventDeadline): the reply timeout of attempt Attempt
	// (PhaseAwaitingReply) or the end of the backoff before sending it (PhaseBackingOff). Without
	// it a duplicate backoff deadline would pass for the timeout of the attempt it sent.
	Phase Phase `json:"phase,omitempty"`

	// Reason explains a failure reply, a cancel, a redrive or a retry.
	Reason string `json:"reason,omitempty"`
	// Actor names who asked for a cancel, a redrive or a retry.
	Actor string `json:"actor,omitempty"`
}
