package definitions

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// ErrInvalid matches every error that reports an invalid definition: an *Error and an ErrorList
// returned by Parse, ParseFile, Validate, Builder.Build, Registry.Register and Registry.LoadDir.
var ErrInvalid = errors.New("invalid definition")

// ErrConflict is returned by Registry.Register and Registry.LoadDir when a definition with the same
// name and version but a different body is already registered.
var ErrConflict = errors.New("conflicting definition")

// ErrNotFound is returned by Registry.Get and Registry.Latest when no definition matches.
var ErrNotFound = errors.New("definition not found")

// maxErrors caps how many errors one ErrorList holds, so that a hostile file cannot make the list
// grow with its size; a last entry says how many more were left off.
const maxErrors = 100

// Error is one problem in a definition.
//
// File, Line and Column locate it in the source (Line and Column are 1-based; Column counts
// characters). They are empty/zero for a definition built in Go, and Column alone is zero for a YAML
// syntax error, whose column the YAML library does not report. Field is the path of the offending
// field, such as "steps[2].retry.backoff"; it is empty for a problem with the whole file.
type Error struct {
	File   string
	Line   int
	Column int
	Field  string
	Msg    string
}

// Error formats the error as "FILE:LINE:COL: FIELD: message", leaving out the parts that are
// empty or zero.
func (e *Error) Error() string {
	var b strings.Builder
	loc := e.File
	if e.Line > 0 {
		loc += ":" + strconv.Itoa(e.Line)
		if e.Column > 0 {
			loc += ":" + strconv.Itoa(e.Column)
		}
	}
	if loc != "" {
		b.WriteString(loc)
		b.WriteString(": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Is reports whether target is ErrInvalid.
func (e *Error) Is(target error) bool { return target == ErrInvalid }

// ErrorList holds every problem found in one definition, sorted by position. It is the error that
// Parse, ParseFile, Validate and Builder.Build return; retrieve it with errors.As to list the
// problems one by one.
type ErrorList []*Error

// Error returns the errors one per line.
func (l ErrorList) Error() string {
	lines := make([]string, len(l))
	for i, e := range l {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Is reports whether target is ErrInvalid.
func (l ErrorList) Is(target error) bool { return target == ErrInvalid }

// Unwrap returns the errors of the list, so that errors.As finds an *Error in it.
func (l ErrorList) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

// err returns the list sorted by position and capped at maxErrors, or nil when it is empty (never a
// typed nil).
func (l ErrorList) err() error { return l.errOmitting(0) }

// errOmitting is err for a list from which omitted more errors were already left out.
func (l ErrorList) errOmitting(omitted int) error {
	if len(l) == 0 {
		return nil
	}
	l = slices.Clone(l)
	slices.SortStableFunc(l, func(a, b *Error) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column))
	})
	if len(l) > maxErrors {
		omitted += len(l) - maxErrors
		l = l[:maxErrors:maxErrors]
	}
	if omitted > 0 {
		l = append(l, &Error{File: l[0].File, Msg: fmt.Sprintf("too many errors (%d more)", omitted)})
	}
	return l
}
