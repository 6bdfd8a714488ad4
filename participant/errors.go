package participant

import "errors"

// ErrUnknownCommand is the dead-letter reason of a command no handler is registered for.
var ErrUnknownCommand = errors.New("no handler registered for command")

// ErrPanic wraps a handler's panic; it is treated as a transient error (the command is redelivered).
var ErrPanic = errors.New("handler panicked")

// ErrStopping is returned for a command that arrived while the participant was shutting down; the
// command is redelivered.
var ErrStopping = errors.New("participant is stopping")

// ErrBarrierState is returned when the barrier holds a record it cannot answer from (a bug or a
// hand-edited table); the command is redelivered, then dead-lettered.
var ErrBarrierState = errors.New("unexpected barrier record")
