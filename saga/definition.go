package saga

import "time"

// Definition is an immutable, validated workflow definition: the steps a saga runs in order and how
// each is retried and compensated. Build one with the definitions package (from YAML/JSON or with its
// Go builder), which fills every default and validates it; the state machine assumes a valid
// Definition and panics on an impossible one (for example no steps).
type Definition struct {
	// Name identifies the workflow: [a-z0-9-], 1..64 characters.
	Name string `json:"name"`
	// Version is >= 1; Name and Version together identify one body. A running instance always
	// finishes on the version it started with.
	Version int `json:"version"`
	// Description is free text for people.
	Description string `json:"description,omitempty"`
	// Trigger, when not nil, starts an instance on a domain event.
	Trigger *Trigger `json:"trigger,omitempty"`
	// Pivot, when not empty, names the step after whose success the saga must complete: every step
	// after it is retried forward (RecoveryRetryForward) and none before it is compensated any more.
	// Empty means no pivot: each step's Recovery decides.
	Pivot string `json:"pivot,omitempty"`
	// Steps run in order; there is at least one.
	Steps []Step `json:"steps"`
}

// Trigger starts an instance of a definition when a domain event arrives on Subject.
type Trigger struct {
	// Subject is a concrete NATS subject (no wildcards), for example "events.order.placed".
	Subject string `json:"subject"`
	// Key names the field of the event's JSON payload whose value becomes the business key.
	Key string `json:"key"`
}

// Step is one forward action of a saga and its optional compensation.
type Step struct {
	// Name is unique within the definition; a step's output is stored under it.
	Name string `json:"name"`
	// Service is the participant service that handles the step's commands
	// (they go to saga.cmd.<service>.<command>).
	Service string `json:"service"`
	// Command is the forward command.
	Command string `json:"command"`
	// Compensation is the command that undoes Command; empty means the step cannot be undone (or,
	// with RecoveryCompensate, that it has no effect to undo).
	Compensation string `json:"compensation,omitempty"`
	// Recovery says what happens when the step does not succeed; empty means the default (see
	// Definition.Recovery).
	Recovery Recovery `json:"recovery,omitempty"`
	// Timeout is how long one attempt waits for its reply before it counts as timed out.
	Timeout time.Duration `json:"timeout"`
	// Retry bounds the attempts of the forward command after timeouts. For a step that is retried
	// forward, spending it stops the saga failed for an operator (it never compensates).
	Retry RetryPolicy `json:"retry"`
	// CompensationRetry bounds the attempts of the compensation; when they are exhausted the saga
	// ends failed and waits for an operator.
	CompensationRetry RetryPolicy `json:"compensation_retry"`
}

// Recovery is how a saga recovers from a step that does not succeed (after the compensatable,
// pivot and retriable transactions of the saga literature).
type Recovery string

const (
	// RecoveryCompensate (a compensatable step): a step that timed out on every attempt, whose
	// outcome is therefore unknown, is compensated with the steps before it; a business failure
	// compensates the steps before it. The default for a step with a compensation. Given to a step
	// without a compensation, it declares that the step has no effect to undo.
	RecoveryCompensate Recovery = "compensate"
	// RecoveryRetryForward (a retriable step): the step cannot be undone, so it is never abandoned
	// by compensating the steps before it while its effect may exist. Timeouts are retried per its
	// Retry policy; when that budget is spent, the saga stops failed and waits for an operator,
	// whose redrive resumes the retries. A business failure means the step did not apply: the steps
	// before it are compensated, unless the saga already passed its point of no return (an earlier
	// retriable step or the pivot completed), in which case the saga stops failed too. A running
	// saga whose current step is retriable cannot be cancelled. The default for a step without a
	// compensation and for every step after the pivot.
	RecoveryRetryForward Recovery = "retry_forward"
)

// RetryPolicy bounds how often an action is attempted and how long to wait between attempts.
// The wait before attempt n+1 is min(Backoff * 2^(n-1), MaxBackoff), then spread by Jitter.
type RetryPolicy struct {
	// MaxAttempts is the total number of attempts, first included: 1..1000.
	MaxAttempts int `json:"max_attempts"`
	// Backoff is the wait before the second attempt.
	Backoff time.Duration `json:"backoff"`
	// MaxBackoff caps the wait between attempts; Backoff <= MaxBackoff.
	MaxBackoff time.Duration `json:"max_backoff"`
	// Jitter is the fraction (0..1) by which a wait is randomly shortened or lengthened.
	Jitter float64 `json:"jitter"`
}

// Recovery returns the recovery of step i: RecoveryRetryForward for a step after the pivot, else
// the step's Recovery when set, else RecoveryCompensate when it has a compensation and
// RecoveryRetryForward when it has none.
func (d *Definition) Recovery(i int) Recovery {
	if d.Pivot != "" {
		if p := d.StepIndex(d.Pivot); p >= 0 && i > p {
			return RecoveryRetryForward
		}
	}
	if r := d.Steps[i].Recovery; r != "" {
		return r
	}
	if d.Steps[i].Compensation == "" {
		return RecoveryRetryForward
	}
	return RecoveryCompensate
}

// irreversible reports whether the success of step i commits the saga to completing: the step is
// retried forward, or it is the pivot.
func (d *Definition) irreversible(i int) bool {
	return d.Recovery(i) == RecoveryRetryForward || (d.Pivot != "" && d.Steps[i].Name == d.Pivot)
}

// StepIndex returns the index of the step named name, or -1.
func (d *Definition) StepIndex(name string) int {
	for i := range d.Steps {
		if d.Steps[i].Name == name {
			return i
		}
	}
	return -1
}
