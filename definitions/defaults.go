package definitions

import (
	"strings"
	"time"

	"github.com/sagaflow/sagaflow/saga"
)

// Built-in defaults, used where neither a step nor the definition's defaults say otherwise.
var (
	builtinTimeout           = 30 * time.Second
	builtinRetry             = saga.RetryPolicy{MaxAttempts: 3, Backoff: time.Second, MaxBackoff: 30 * time.Second, Jitter: 0.2}
	builtinCompensationRetry = saga.RetryPolicy{MaxAttempts: 10, Backoff: time.Second, MaxBackoff: time.Minute, Jitter: 0.2}
)

// spec is a definition as written, in YAML or with the Builder: optional fields are nil when they
// were not given. resolve turns it into a saga.Definition.
type spec struct {
	name        string
	version     int
	description string
	trigger     *saga.Trigger
	pivot       string
	defaults    stepDefaults
	steps       []stepSpec // nil when not given, empty when given empty
}

// stepDefaults holds the fields that a step may leave to the definition's defaults.
type stepDefaults struct {
	timeout           *time.Duration
	retry             *retrySpec
	compensationRetry *retrySpec
}

type stepSpec struct {
	name, service, command, compensation string
	// recovery is empty when not given.
	recovery saga.Recovery
	stepDefaults
}

type retrySpec struct {
	maxAttempts         *int
	backoff, maxBackoff *time.Duration
	jitter              *float64
}

// fill returns r with its missing fields taken from def.
func (r *retrySpec) fill(def saga.RetryPolicy) saga.RetryPolicy {
	if r == nil {
		return def
	}
	if r.maxAttempts != nil {
		def.MaxAttempts = *r.maxAttempts
	}
	if r.backoff != nil {
		def.Backoff = *r.backoff
	}
	if r.maxBackoff != nil {
		def.MaxBackoff = *r.maxBackoff
	}
	if r.jitter != nil {
		def.Jitter = *r.jitter
	}
	return def
}

// resolve fills every default (step field, then the definition's defaults, then the built-in ones)
// and reports every problem of the result. An invalid value in the defaults is reported once, at
// the defaults, and the steps get the built-in value instead, so that one mistake is not repeated
// for every step.
func (s *spec) resolve(report reportFunc) *saga.Definition {
	timeout := builtinTimeout
	if t := s.defaults.timeout; t != nil && checkDuration("defaults.timeout", *t, report) {
		timeout = *t
	}
	retry := s.defaults.retry.fill(builtinRetry)
	if !checkRetry("defaults.retry", retry, report) {
		retry = builtinRetry
	}
	compRetry := s.defaults.compensationRetry.fill(builtinCompensationRetry)
	if !checkRetry("defaults.compensation_retry", compRetry, report) {
		compRetry = builtinCompensationRetry
	}

	d := &saga.Definition{
		Name:        s.name,
		Version:     s.version,
		Description: s.description,
		Pivot:       s.pivot,
	}
	if s.trigger != nil {
		t := *s.trigger
		d.Trigger = &t
	}
	if s.steps != nil {
		d.Steps = make([]saga.Step, len(s.steps))
	}
	for i, st := range s.steps {
		d.Steps[i] = saga.Step{
			Name:              st.name,
			Service:           st.service,
			Command:           st.command,
			Compensation:      st.compensation,
			Recovery:          st.recovery,
			Timeout:           timeout,
			Retry:             st.retry.fill(retry),
			CompensationRetry: st.compensationRetry.fill(compRetry),
		}
		if st.timeout != nil {
			d.Steps[i].Timeout = *st.timeout
		}
	}
	// A recovery left out takes the default, which depends on the compensation and the pivot; one
	// given is kept as written, so that the rules can tell it apart.
	for i := range d.Steps {
		if d.Steps[i].Recovery == "" {
			d.Steps[i].Recovery = d.Recovery(i)
		}
	}
	validateDefinition(d, report)
	return d
}

// formatDuration writes d in Go syntax without the zero units that time.Duration.String adds:
// 24h rather than 24h0m0s. time.ParseDuration reads the result back exactly.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// clone returns a deep copy of d.
func clone(d *saga.Definition) *saga.Definition {
	c := *d
	if d.Trigger != nil {
		t := *d.Trigger
		c.Trigger = &t
	}
	if d.Steps != nil {
		c.Steps = make([]saga.Step, len(d.Steps))
		copy(c.Steps, d.Steps)
	}
	return &c
}
