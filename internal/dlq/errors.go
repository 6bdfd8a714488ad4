package dlq

import "errors"

// ErrNotFound is returned when no message of SAGA_DLQ has the sequence asked for.
var ErrNotFound = errors.New("dlq: message not found")

// ErrReasonRequired is returned by Replay and Purge without a reason.
var ErrReasonRequired = errors.New("dlq: a reason is required")

// ErrInvalidParams is returned for a malformed filter or selection (a bad subject pattern, a
// limit out of range, no sequences).
var ErrInvalidParams = errors.New("dlq: invalid parameters")

// ErrNotReplayable is returned by Replay for a message that does not say where it came from
// (no Sagaflow-Dlq-Subject header), or came from a subject no Sagaflow stream captures.
var ErrNotReplayable = errors.New("dlq: message cannot be replayed")
