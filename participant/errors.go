package participant

import "errors"

// ErrUnknownCommand is the dead-letter reason of a command no handler is registered for.
var ErrUnknownCommand = errors.New("no handler registered for command")

// ErrPanic wraps a handler's panic; it is treated as a transient error (the command is redelivered).
var ErrPanic = errors.New("handler panicked")

// ErrBarrierState is returned when the barrier holds a record it cannot answer from (a bug or a
// hand-edited table); the command is redelivered, then dead-lettered.
var ErrBarrierState = errors.New("unexpected barrier record")

// ErrRejected is matched (errors.Is) by the error Reject returns: the command goes to the
// dead-letter stream at once, with the error as its reason, and is never retried.
var ErrRejected = errors.New("command rejected")

// ErrReplyTo is the dead-letter reason of a command whose reply subject is not under saga.reply.:
// a participant replies only where the message contract allows, never to a subject a sender chose.
var ErrReplyTo = errors.New("reply subject not under saga.reply.>")

// RejectError is a handler's permanent refusal of a command (see Reject).
type RejectError struct {
	// Err says why; it becomes the dead letter's reason.
	Err error
}

// Reject returns an error a handler returns to refuse a command for good — it can never be handled,
// whatever happens (like River's JobCancel): the handler's writes are rolled back, no reply is
// sent, and the command goes to the SAGA_DLQ stream at once with err's text as its reason, where an
// operator can inspect and replay it. The saga's step then times out and is retried or compensated
// by its definition. For a business "no" that the saga should act on now, answer Failure instead.
func Reject(err error) error {
	if err == nil {
		err = errors.New("rejected by the handler")
	}
	return &RejectError{Err: err}
}

func (e *RejectError) Error() string { return "command rejected: " + e.Err.Error() }

// Unwrap returns the reason.
func (e *RejectError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrRejected) true.
func (e *RejectError) Is(target error) bool { return target == ErrRejected }

// ErrNoParticipant is returned by Command.Publish on a Command that no participant delivered (a
// handler called directly, in a test).
var ErrNoParticipant = errors.New("command not delivered by a participant")
