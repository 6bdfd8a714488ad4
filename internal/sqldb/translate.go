package sqldb

import (
	"errors"

	"github.com/lib/pq"
)

// Error is a PostgreSQL error translated at the storage boundary: it keeps the server's
// SQLSTATE code and message but not the driver's "pq:" prefix, so what reaches a log or a caller
// reads as the database's refusal rather than a driver's. Unwrap returns the driver's error, so
// IsUniqueViolation and IsSerializationFailure still see it.
type Error struct {
	// Code is the SQLSTATE, for example "22021" (invalid byte sequence) or "54000" (a value too
	// large for an index row).
	Code string
	// Message is the server's primary message.
	Message string
	err     error
}

func (e *Error) Error() string {
	return "database refused the statement: " + e.Message + " (SQLSTATE " + e.Code + ")"
}

func (e *Error) Unwrap() error { return e.err }

// Translate returns err with a *pq.Error in it replaced by an *Error; any other error (SQLite's,
// sql.ErrNoRows, nil) is returned as is. Call it where a storage function hands a driver error
// up, before wrapping it with context.
func Translate(err error) error {
	var pqErr *pq.Error
	if err == nil || !errors.As(err, &pqErr) {
		return err
	}
	if _, done := errors.AsType[*Error](err); done {
		return err
	}
	return &Error{Code: string(pqErr.Code), Message: pqErr.Message, err: pqErr}
}
