package saga

import "time"

// ActionKind says what an Action asks the engine to do.
type ActionKind string

const (
	// ActionSendCommand asks the engine to send Step's forward Command to Service, with the
	// instance's Data as payload, tagged with Attempt.
	ActionSendCommand ActionKind = "send_command"
	// ActionSendCompensation asks the engine to send Step's compensation Command to Service, with
	// the instance's Data as payload, tagged with Attempt.
	ActionSendCompensation ActionKind = "send_compensation"
	// ActionScheduleDeadline asks the engine to apply an EventDeadline with this Step, Attempt,
	// Compensation and Phase at At. It replaces any earlier deadline of the instance; At always
	// equals the new Instance.Deadline.
	ActionScheduleDeadline ActionKind = "schedule_deadline"
	// ActionFinish says the saga finished with Status; the engine drops its deadline, records the
	// end and alerts on StatusFailed.
	ActionFinish ActionKind = "finish"
)

// Action is something Apply asks the engine to do, in the same transaction that stores the new
// instance. Apply returns at most one send and one deadline, or one finish.
type Action struct {
	// Kind says which of the fields below apply.
	Kind ActionKind `json:"kind"`
	// Step names the step a send or deadline is for.
	Step string `json:"step,omitempty"`
	// Service is the participant that handles the command (sends only).
	Service string `json:"service,omitempty"`
	// Command is the forward or compensation command to send (sends only).
	Command string `json:"command,omitempty"`
	// Attempt is the attempt number of a send, and for a deadline the attempt it concerns: the
	// awaited one when Phase is PhaseAwaitingReply, the one to send when PhaseBackingOff.
	Attempt int `json:"attempt,omitempty"`
	// Compensation says whether a send or deadline is for the step's compensation.
	Compensation bool `json:"compensation,omitempty"`
	// Generation is the step's retry generation (StepState.Generation) of a send: 0 until an
	// operator retries the step after a failure. The participant's barrier keys what it did on
	// (saga, step, generation, action), so a retried step is a new action there.
	Generation int `json:"generation,omitempty"`
	// At is when the deadline is due (ActionScheduleDeadline).
	At time.Time `json:"at,omitzero"`
	// Phase says what a deadline ends: a reply timeout or a retry backoff (ActionScheduleDeadline).
	Phase Phase `json:"phase,omitempty"`
	// Status is the final status (ActionFinish).
	Status Status `json:"status,omitempty"`
}
