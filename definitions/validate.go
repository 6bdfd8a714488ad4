package definitions

import (
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sagaflow/sagaflow/saga"
)

// Limits of the format. schema.json states the same rules for editors; the schema test keeps the
// two in step.
const (
	maxFileSize       = 1 << 20 // bytes of one definition file
	maxSteps          = 256
	maxNameLen        = 64 // definition, step and service names
	maxCommandLen     = 64
	maxDescriptionLen = 4096 // characters
	maxSubjectLen     = 255
	maxKeyLen         = 255
	minDuration       = time.Millisecond
	maxDuration       = 24 * time.Hour
	maxAttemptsLimit  = 1000
)

var (
	// nameRe is the syntax of definition, step and service names: a service name becomes a NATS
	// subject token (saga.cmd.<service>.<command>), a definition name another (saga.reply.<name>).
	nameRe    = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$`)
	commandRe = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,63}$`)
	keyRe     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$`)
)

// reportFunc receives one problem: the path of the field and what is wrong with it.
type reportFunc func(field, msg string)

// Validate checks a definition built in Go against the rules of the format: every field that
// Parse would fill must be set (Validate fills no defaults; Builder.Build does). It returns nil or
// an ErrorList, matching ErrInvalid, with every problem; its errors have a Field but no position.
func Validate(d *saga.Definition) error {
	var errs ErrorList
	if d == nil {
		return ErrorList{{Msg: "definition is nil"}}
	}
	validateDefinition(d, func(field, msg string) {
		errs = append(errs, &Error{Field: field, Msg: msg})
	})
	return errs.err()
}

// validateDefinition reports every problem of d, a definition with all defaults filled in.
func validateDefinition(d *saga.Definition, report reportFunc) {
	checkName("name", d.Name, report)
	if d.Version < 1 {
		report("version", fmt.Sprintf("must be an integer >= 1, got %d", d.Version))
	}
	if n := utf8.RuneCountInString(d.Description); n > maxDescriptionLen {
		report("description", fmt.Sprintf("must be at most %d characters, got %d", maxDescriptionLen, n))
	}
	if d.Trigger != nil {
		checkSubject("trigger.subject", d.Trigger.Subject, report)
		checkKey("trigger.key", d.Trigger.Key, report)
	}
	switch {
	case d.Steps == nil:
		report("steps", "is required")
	case len(d.Steps) == 0:
		report("steps", "must have at least one step")
	case len(d.Steps) > maxSteps:
		report("steps", fmt.Sprintf("has %d steps, at most %d are allowed", len(d.Steps), maxSteps))
	}
	seen := make(map[string]int, len(d.Steps))
	for i := range d.Steps {
		s := &d.Steps[i]
		p := fmt.Sprintf("steps[%d]", i)
		if checkName(p+".name", s.Name, report) {
			if first, dup := seen[s.Name]; dup {
				report(p+".name", fmt.Sprintf("duplicate step name %q (already used by steps[%d])", s.Name, first))
			} else {
				seen[s.Name] = i
			}
		}
		checkName(p+".service", s.Service, report)
		checkCommand(p+".command", s.Command, report)
		if s.Compensation != "" {
			checkCommand(p+".compensation", s.Compensation, report)
		}
		checkDuration(p+".timeout", s.Timeout, report)
		checkRetry(p+".retry", s.Retry, report)
		checkRetry(p+".compensation_retry", s.CompensationRetry, report)
	}
	checkRecovery(d, report)
}

// checkRecovery checks the recoveries and the pivot: the shape of a saga from the literature,
// compensatable steps, then (optionally) a pivot, then retriable steps. A step that is compensated
// cannot follow one that cannot be undone (once that one completes, the saga only goes forward, so
// the compensation would never run), and a step that is retried forward has no use for a
// compensation. An empty Recovery means the default (saga.Definition.Recovery).
func checkRecovery(d *saga.Definition, report reportFunc) {
	pivot := -1
	if d.Pivot != "" {
		if pivot = d.StepIndex(d.Pivot); pivot < 0 {
			report("pivot", fmt.Sprintf("must name a step of the definition; there is no step %q", d.Pivot))
		}
	}
	forward := -1 // the first step retried forward
	for i := range d.Steps {
		s := &d.Steps[i]
		p := fmt.Sprintf("steps[%d]", i)
		switch s.Recovery {
		case "", saga.RecoveryCompensate, saga.RecoveryRetryForward:
		default:
			report(p+".recovery", fmt.Sprintf("must be %q or %q, got %q", saga.RecoveryCompensate, saga.RecoveryRetryForward, s.Recovery))
			continue
		}
		afterPivot := pivot >= 0 && i > pivot
		r := d.Recovery(i)
		switch {
		case afterPivot && s.Recovery == saga.RecoveryCompensate:
			report(p+".recovery", fmt.Sprintf("must be %q: the step comes after the pivot %q, so it is retried forward",
				saga.RecoveryRetryForward, d.Pivot))
		case r == saga.RecoveryCompensate && forward >= 0:
			report(p+".recovery", fmt.Sprintf("step %q is compensated but follows %q, which cannot be undone: once %q completes the saga only goes forward; "+
				"move it before %q, or give it recovery: %s", s.Name, d.Steps[forward].Name, d.Steps[forward].Name, d.Steps[forward].Name, saga.RecoveryRetryForward))
		case r == saga.RecoveryRetryForward && s.Compensation != "":
			why := "recovery: " + string(saga.RecoveryRetryForward)
			if afterPivot {
				why = fmt.Sprintf("it comes after the pivot %q", d.Pivot)
			}
			report(p+".compensation", fmt.Sprintf("would never run: the step is retried forward (%s) and never compensated; remove it", why))
		}
		if r == saga.RecoveryRetryForward && forward < 0 {
			forward = i
		}
	}
}

// checkName checks a definition, step or service name and reports whether it is valid.
func checkName(field, v string, report reportFunc) bool {
	switch {
	case v == "":
		report(field, "is required")
	case len(v) > maxNameLen:
		report(field, fmt.Sprintf("must be at most %d characters, got %d", maxNameLen, len(v)))
	case !nameRe.MatchString(v):
		report(field, fmt.Sprintf("must be lowercase letters, digits and dashes, not starting or ending with a dash; got %q", v))
	default:
		return true
	}
	return false
}

func checkCommand(field, v string, report reportFunc) {
	switch {
	case v == "":
		report(field, "is required")
	case len(v) > maxCommandLen:
		report(field, fmt.Sprintf("must be at most %d characters, got %d", maxCommandLen, len(v)))
	case !commandRe.MatchString(v):
		report(field, fmt.Sprintf("must start with a letter and hold only letters, digits and underscores; got %q", v))
	}
}

// checkSubject checks a trigger subject: a concrete NATS subject on the EVENTS stream.
func checkSubject(field, v string, report reportFunc) {
	if v == "" {
		report(field, "is required")
		return
	}
	if len(v) > maxSubjectLen {
		report(field, fmt.Sprintf("must be at most %d characters, got %d", maxSubjectLen, len(v)))
		return
	}
	var space, wildcard, unprintable, emptyToken bool
	token := 0
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			space = true
		case c == '*' || c == '>':
			wildcard = true
		case c < 0x21 || c > 0x7e:
			unprintable = true
		case c == '.':
			if token == 0 {
				emptyToken = true
			}
			token = -1
		}
		token++
	}
	if token == 0 {
		emptyToken = true
	}
	switch {
	case space:
		report(field, fmt.Sprintf("must not contain whitespace; got %q", v))
	case wildcard:
		report(field, fmt.Sprintf("must be a concrete subject: wildcards * and > are not allowed; got %q", v))
	case unprintable:
		report(field, fmt.Sprintf("must be printable ASCII; got %q", v))
	case emptyToken:
		report(field, fmt.Sprintf("must not have empty tokens (a leading, trailing or double dot); got %q", v))
	case !strings.HasPrefix(v, "events."):
		report(field, fmt.Sprintf("must start with \"events.\": triggers listen on the EVENTS stream; got %q", v))
	}
}

func checkKey(field, v string, report reportFunc) {
	switch {
	case v == "":
		report(field, "is required")
	case len(v) > maxKeyLen:
		report(field, fmt.Sprintf("must be at most %d characters, got %d", maxKeyLen, len(v)))
	case !keyRe.MatchString(v):
		report(field, fmt.Sprintf("must be a JSON field name such as order_id, or a dotted path such as order.id; got %q", v))
	}
}

// checkDuration checks a timeout or backoff and reports whether it is valid.
func checkDuration(field string, v time.Duration, report reportFunc) bool {
	switch {
	case v <= 0:
		report(field, fmt.Sprintf("must be positive, got %s", formatDuration(v)))
	case v < minDuration:
		report(field, fmt.Sprintf("must be at least %s, got %s", formatDuration(minDuration), formatDuration(v)))
	case v > maxDuration:
		report(field, fmt.Sprintf("must be at most %s, got %s", formatDuration(maxDuration), formatDuration(v)))
	default:
		return true
	}
	return false
}

// checkRetry checks a retry policy with every field filled and reports whether it is valid.
func checkRetry(field string, p saga.RetryPolicy, report reportFunc) bool {
	ok := true
	if p.MaxAttempts < 1 || p.MaxAttempts > maxAttemptsLimit {
		report(field+".max_attempts", fmt.Sprintf("must be between 1 and %d, got %d", maxAttemptsLimit, p.MaxAttempts))
		ok = false
	}
	backoffOK := checkDuration(field+".backoff", p.Backoff, report)
	maxBackoffOK := checkDuration(field+".max_backoff", p.MaxBackoff, report)
	if !backoffOK || !maxBackoffOK {
		ok = false
	} else if p.Backoff > p.MaxBackoff {
		report(field+".backoff", fmt.Sprintf("must not exceed max_backoff (%s > %s)", formatDuration(p.Backoff), formatDuration(p.MaxBackoff)))
		ok = false
	}
	if !(p.Jitter >= 0 && p.Jitter <= 1) { // also catches NaN
		report(field+".jitter", fmt.Sprintf("must be between 0 and 1, got %v", p.Jitter))
		ok = false
	}
	return ok
}
