package engine

import "errors"

var (
	// ErrNotFound is returned by Get, GetByKey, History, Wait, Cancel and Redrive when no instance
	// has the given id (or definition and business key).
	ErrNotFound = errors.New("saga instance not found")
	// ErrConflict is returned when an instance changed under a transition (its row version moved):
	// another replica applied an event to it at the same time. The transition was rolled back and
	// may be retried.
	ErrConflict = errors.New("saga instance changed concurrently")
	// ErrInvalidInput is returned by Start for an input that is not valid JSON, by RetryStep for an
	// input patch or replacement that is not valid JSON (or both at once), and by the trigger
	// for an event whose payload does not carry the business key.
	ErrInvalidInput = errors.New("invalid input")
	// ErrUntrustedReply is the reason a reply is dead-lettered instead of applied: its subject's
	// definition, its definition or version header, its step or its attempt does not match the
	// saga it names (a forged or misrouted reply). The error text names the mismatch.
	ErrUntrustedReply = errors.New("untrusted reply")
	// ErrTooLarge is matched by the *LimitError Start returns for a business key, idempotency key,
	// input or command over its size limit.
	ErrTooLarge = errors.New("too large")
	// ErrNoAttention is returned by Resolve for an instance that is not in the operator's queue
	// (its NeedsAttention is false).
	ErrNoAttention = errors.New("saga does not need attention")
)
