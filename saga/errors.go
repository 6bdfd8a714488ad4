package saga

import (
	"errors"
	"strconv"
	"strings"
)

// Apply rejects an event that does not apply with a *RejectedError matching one of these sentinels
// (errors.Is). It then returns the instance unchanged and no action: the caller records the event,
// logs the error and moves on. A duplicate of an event already applied is always rejected.
var (
	// ErrAlreadyStarted rejects an EventStart for an instance that is not the zero Instance.
	ErrAlreadyStarted = errors.New("saga already started")
	// ErrNotStarted rejects any event but EventStart for the zero Instance.
	ErrNotStarted = errors.New("saga not started")
	// ErrFinished rejects a reply, deadline or cancel for a completed, compensated or failed saga.
	ErrFinished = errors.New("saga finished")
	// ErrStale rejects a reply or deadline for an old attempt, an old or future step, the other
	// direction (forward versus compensation) or the other phase, including a duplicate of one
	// already applied.
	ErrStale = errors.New("stale event")
	// ErrUnknownStep rejects a reply or deadline naming a step the definition does not have.
	ErrUnknownStep = errors.New("unknown step")
	// ErrCompensating rejects an EventCancel for a saga that is already compensating.
	ErrCompensating = errors.New("saga already compensating")
	// ErrNotCancellable rejects an EventCancel for a running saga whose current step is retried
	// forward or that passed its point of no return: compensating would abandon an effect that
	// nothing undoes.
	ErrNotCancellable = errors.New("saga cannot be cancelled")
	// ErrNotFailed rejects an EventRedrive for a saga whose status is not failed.
	ErrNotFailed = errors.New("saga not failed")
	// ErrNotRetryable rejects an EventRetryStep for a saga that is not failed on a halted forward
	// step: running or compensating (it is not stopped), completed, compensated (its compensations
	// ran: going forward again would redo what was undone), or failed because a compensation
	// exhausted its budget (EventRedrive resumes that).
	ErrNotRetryable = errors.New("saga step cannot be retried")
	// ErrInvalidEvent rejects a malformed event: an unknown kind or outcome, a zero Time, a Rand
	// outside [0, 1), an empty start ID, a deadline without a phase, or Input or Output that is not
	// valid JSON.
	ErrInvalidEvent = errors.New("invalid event")
	// ErrInvalidInstance rejects an event for an instance this definition cannot have produced:
	// another definition or version, another number of steps, an index out of range, an unknown
	// status or phase. It signals a bug in the caller, not in the traffic.
	ErrInvalidInstance = errors.New("invalid instance")
)

// RejectedError is the error Apply returns for an event that does not apply. errors.Is matches it
// against its sentinel Err; its fields say which event and why, for logs.
type RejectedError struct {
	// Err is one of the sentinels of this package.
	Err error
	// SagaID is the instance's ID (for EventStart, the event's).
	SagaID string
	// Kind is the rejected event's kind.
	Kind EventKind
	// Step, Attempt and Compensation are the rejected reply's or deadline's, else zero.
	Step         string
	Attempt      int
	Compensation bool
	// Detail says what did not match, for people, for example "attempt 3 is current".
	Detail string
}

// Error describes the rejected event, for example
// `saga 42: reply step "pay" attempt 2: stale event: attempt 3 is current`.
func (e *RejectedError) Error() string {
	var b strings.Builder
	b.WriteString("saga ")
	b.WriteString(e.SagaID)
	b.WriteString(": ")
	b.WriteString(string(e.Kind))
	if e.Step != "" {
		b.WriteString(" step ")
		b.WriteString(strconv.Quote(e.Step))
		b.WriteString(" attempt ")
		b.WriteString(strconv.Itoa(e.Attempt))
		if e.Compensation {
			b.WriteString(" (compensation)")
		}
	}
	b.WriteString(": ")
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	} else {
		b.WriteString("rejected")
	}
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	return b.String()
}

// Is reports whether target is e's sentinel, so that errors.Is(err, ErrStale) works.
func (e *RejectedError) Is(target error) bool {
	return e.Err != nil && target == e.Err
}
