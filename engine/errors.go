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
	// ErrInvalidInput is returned by Start for an input that is not valid JSON, and by the trigger
	// for an event whose payload does not carry the business key.
	ErrInvalidInput = errors.New("invalid input")
	// ErrNoAttention is returned by Resolve for an instance that is not in the operator's queue
	// (its NeedsAttention is false).
	ErrNoAttention = errors.New("saga does not need attention")
)
