package saga

import (
	"encoding/json"
	"maps"
	"slices"
	"time"
)

// Status is where a saga instance is in its life. It is stored as the instance's status column.
type Status string

const (
	// StatusRunning means the forward steps are running: one step's command is awaiting its reply
	// or waiting to be retried.
	StatusRunning Status = "running"
	// StatusCompensating means a step failed, timed out on every attempt, or the saga was
	// cancelled, and the compensations of the steps that applied are running in reverse order.
	StatusCompensating Status = "compensating"
	// StatusCompleted means every step succeeded. It is terminal.
	StatusCompleted Status = "completed"
	// StatusCompensated means every step that applied (or may have applied) has been compensated,
	// or that there was nothing to compensate. It is terminal.
	StatusCompensated Status = "compensated"
	// StatusFailed means the saga needs an operator, who may fix the cause and Redrive it: either a
	// compensation exhausted its retry budget (the saga is half undone; the current step is
	// StepCompensationFailed), or a step that cannot be undone could not go forward (it is
	// StepHalted: its forward retry budget is spent, or it failed after the point of no return).
	// It is terminal in the sense that no reply or deadline changes it; only EventRedrive does.
	StatusFailed Status = "failed"
)

// Finished reports whether s is a terminal status (completed, compensated or failed): the instance
// has no pending deadline, nothing is awaited, and no reply, deadline or cancel changes it.
func (s Status) Finished() bool {
	return s == StatusCompleted || s == StatusCompensated || s == StatusFailed
}

// Phase says what an unfinished instance is waiting for until its Deadline.
type Phase string

const (
	// PhaseNone is the phase of a finished instance: it waits for nothing.
	PhaseNone Phase = ""
	// PhaseAwaitingReply means the command (or compensation) Attempt has been sent and its reply is
	// awaited; at the Deadline the attempt counts as timed out.
	PhaseAwaitingReply Phase = "awaiting_reply"
	// PhaseBackingOff means the previous attempt failed and attempt Attempt will be sent at the
	// Deadline.
	PhaseBackingOff Phase = "backing_off"
)

// StepStatus is where one step of an instance is.
type StepStatus string

const (
	// StepPending means the step has not started.
	StepPending StepStatus = "pending"
	// StepRunning means the step's command has been sent at least once and its outcome is not
	// known yet.
	StepRunning StepStatus = "running"
	// StepCompleted means the participant answered success; its output is in Data.Steps.
	StepCompleted StepStatus = "completed"
	// StepFailed means the participant answered a business failure or refused the command: the
	// step did not apply and is not compensated.
	StepFailed StepStatus = "failed"
	// StepTimedOut means every attempt of a compensatable step timed out: the outcome is unknown
	// (the step may have run and only its reply been lost), so the step is compensated if it has a
	// compensation.
	StepTimedOut StepStatus = "timed_out"
	// StepAborted means the saga was cancelled while the step's command was in flight: the outcome
	// is unknown, so the step is compensated if it has a compensation.
	StepAborted StepStatus = "aborted"
	// StepCompensating means the step's compensation has been sent and is awaited or retried.
	StepCompensating StepStatus = "compensating"
	// StepCompensated means the participant answered success to the step's compensation.
	StepCompensated StepStatus = "compensated"
	// StepCompensationFailed means the step's compensation exhausted its budget; the saga is
	// failed and a Redrive starts it again.
	StepCompensationFailed StepStatus = "compensation_failed"
	// StepSkipped means the step never ran because the saga compensated before reaching it.
	StepSkipped StepStatus = "skipped"
	// StepHalted means the step cannot be undone and could not go forward: it is retried forward
	// and timed out on every attempt of its budget (its effect may exist), or it answered a failure
	// after the saga passed its point of no return. The saga is failed; a redrive resumes the
	// step's forward attempts with a fresh budget.
	StepHalted StepStatus = "halted"
)

// StepState is the progress of one step of an instance. Instance.Steps holds one per step of the
// definition, in the definition's order.
type StepState struct {
	// Name is the step's name, copied from the definition so a stored instance reads on its own.
	Name string `json:"name"`
	// Status is where the step is.
	Status StepStatus `json:"status"`
	// Attempts is the number of forward commands sent; the last one sent has this attempt number.
	Attempts int `json:"attempts"`
	// AttemptBase is Attempts at the last redrive of a halted step: the current forward budget
	// (Retry.MaxAttempts) counts only the attempts above it.
	AttemptBase int `json:"attempt_base,omitempty"`
	// Generation counts the operator retries (EventRetryStep) of the step after a failure or
	// refusal reply: the participant recorded that outcome in its barrier (the step did not apply),
	// so the retry must be a new action there, keyed by the new generation. A retry of a step halted
	// after timeouts keeps the generation: its effect may exist, and the barrier answers from it.
	Generation int `json:"generation,omitempty"`
	// FailedReply says that the step's last forward outcome was a failure or refusal reply (as
	// opposed to timeouts): set when it halts on one, cleared when it is sent again.
	FailedReply bool `json:"failed_reply,omitempty"`
	// CompensationAttempts is the number of compensations sent, across redrives; the last one sent
	// has this attempt number. Numbers are never reused, so a late reply is always recognised.
	CompensationAttempts int `json:"compensation_attempts,omitempty"`
	// CompensationBase is CompensationAttempts at the last redrive: the current compensation
	// budget (CompensationRetry.MaxAttempts) counts only the attempts above it.
	CompensationBase int `json:"compensation_base,omitempty"`
	// StartedAt is when the first forward command was sent.
	StartedAt time.Time `json:"started_at,omitzero"`
	// FinishedAt is when the forward outcome was settled: completed, failed, timed out or aborted.
	FinishedAt time.Time `json:"finished_at,omitzero"`
	// CompensationStartedAt is when the first compensation was sent.
	CompensationStartedAt time.Time `json:"compensation_started_at,omitzero"`
	// CompensationFinishedAt is when the compensation succeeded or exhausted its budget.
	CompensationFinishedAt time.Time `json:"compensation_finished_at,omitzero"`
	// LastError is the step's most recent error: a failure reason, a timed-out attempt, a cancel.
	LastError string `json:"last_error,omitempty"`
}

// Data is a saga's data, and the payload of every command and compensation it sends (as JSON:
// {"input": ..., "steps": {...}}).
type Data struct {
	// Input is the JSON the saga was started with (JSON null when none was given).
	Input json.RawMessage `json:"input"`
	// Steps maps the name of each completed step to the output of its success reply.
	Steps map[string]json.RawMessage `json:"steps"`
}

// Instance is the state of one saga: a plain value, stored by the engine as JSON and columns, and
// changed only by Apply, which returns a new value and leaves the old one intact.
//
// The zero Instance is a saga that has not started; EventStart starts it.
type Instance struct {
	// ID identifies the saga; it comes from EventStart.
	ID string `json:"id"`
	// Definition is the name of the definition the saga runs.
	Definition string `json:"definition"`
	// Version is the version of the definition; a saga finishes on the version it started with.
	Version int `json:"version"`
	// BusinessKey is the business identifier (for example an order id) an operator searches by.
	BusinessKey string `json:"business_key,omitempty"`
	// Status is where the saga is.
	Status Status `json:"status"`
	// Step is the index of the current step: the forward step while running, the step being
	// compensated while compensating, the halted step or the step whose compensation exhausted its
	// budget when failed, and the last step handled when completed or compensated.
	Step int `json:"step"`
	// Phase is what the saga waits for until Deadline; PhaseNone once finished.
	Phase Phase `json:"phase,omitempty"`
	// Attempt is the attempt number of the current action of Step, forward while running and
	// compensation while compensating: while awaiting a reply, the attempt that was sent; while
	// backing off, the attempt that will be sent at Deadline.
	Attempt int `json:"attempt"`
	// Steps holds the progress of every step of the definition, in order.
	Steps []StepState `json:"steps"`
	// ToCompensate lists the indices of the steps still to compensate, in the order they will be
	// compensated (reverse order of completion). While compensating, and when failed on a
	// compensation, the first one is Step. Empty while running, when failed on a halted step, and
	// once completed or compensated.
	ToCompensate []int `json:"to_compensate,omitempty"`
	// Data is the saga's data: its input and the outputs of its completed steps.
	Data Data `json:"data"`
	// Deadline is the single pending deadline of an unfinished saga: when the awaited reply times
	// out, or when a backed-off attempt is due. It is zero once finished. The engine turns it into
	// an EventDeadline with DeadlineEvent.
	Deadline time.Time `json:"deadline,omitzero"`
	// LastError is the saga's most recent error (a failure reply, a timed-out attempt, a cancel, an
	// exhausted compensation), prefixed with the step it concerns; later progress does not clear it.
	LastError string `json:"last_error,omitempty"`
	// CreatedAt is the time of EventStart.
	CreatedAt time.Time `json:"created_at"`
	// UpdatedAt is the time of the last event applied.
	UpdatedAt time.Time `json:"updated_at"`
	// FinishedAt is when the saga finished; zero while unfinished (a redrive resets it).
	FinishedAt time.Time `json:"finished_at,omitzero"`
}

// Clone returns a deep copy of in that shares no slice, map or byte with it.
//
// Apply never modifies the instance it is given, so a caller needs Clone only to modify an
// instance itself.
func (in Instance) Clone() Instance {
	in.Steps = slices.Clone(in.Steps)
	in.ToCompensate = slices.Clone(in.ToCompensate)
	in.Data.Input = cloneRaw(in.Data.Input)
	if in.Data.Steps != nil {
		steps := make(map[string]json.RawMessage, len(in.Data.Steps))
		for k, v := range in.Data.Steps {
			steps[k] = cloneRaw(v)
		}
		in.Data.Steps = steps
	}
	return in
}

func cloneRaw(b json.RawMessage) json.RawMessage {
	if b == nil {
		return nil
	}
	return slices.Clone(b)
}

// DeadlineEvent returns the EventDeadline the engine applies when in's Deadline has passed, with
// the given time and random number, and false when in is finished (it has no deadline). A stored
// instance therefore needs no other column to drive its timer.
func (in Instance) DeadlineEvent(now time.Time, rnd float64) (Event, bool) {
	if in.Status.Finished() || in.Deadline.IsZero() || in.Step < 0 || in.Step >= len(in.Steps) {
		return Event{}, false
	}
	return Event{
		Kind:         EventDeadline,
		Time:         now,
		Rand:         rnd,
		Step:         in.Steps[in.Step].Name,
		Attempt:      in.Attempt,
		Compensation: in.Status == StatusCompensating,
		Phase:        in.Phase,
	}, true
}

// withOutput returns a copy of d with out stored under step, leaving d's map untouched.
func (d Data) withOutput(step string, out json.RawMessage) Data {
	steps := make(map[string]json.RawMessage, len(d.Steps)+1)
	maps.Copy(steps, d.Steps)
	steps[step] = out
	d.Steps = steps
	return d
}
