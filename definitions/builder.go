package definitions

import (
	"time"

	"github.com/sagaflow/sagaflow/saga"
)

// NoJitter, as the Jitter of a RetryPolicy given to the Builder, asks for no jitter at all: a zero
// Jitter, like every zero field, takes the default instead.
const NoJitter = -1.0

// Builder builds a definition in Go, with the same defaults and rules as the YAML format. Start one
// with New, chain its methods, and finish with Build:
//
//	d, err := definitions.New("order-fulfilment", 1).
//		DefaultTimeout(10*time.Second).
//		Step("create-order", "order", "CreateOrder").Compensation("CancelOrder").
//		Step("charge-payment", "payment", "ChargePayment").Compensation("RefundPayment").
//		Build()
//
// A zero argument (a zero duration, a zero field of a RetryPolicy) means "not given", like a field
// left out of the YAML: it takes the definition's default, then the built-in one. A Builder is not
// safe for concurrent use.
type Builder struct {
	s spec
}

// StepBuilder sets the optional fields of the step that Builder.Step added. Its Step and Build
// methods continue with the Builder, so that a whole definition is one chain.
type StepBuilder struct {
	b *Builder
	i int
}

// New starts a definition with a name ([a-z0-9-], 1..64) and a version (>= 1). Neither is checked
// before Build.
func New(name string, version int) *Builder {
	return &Builder{s: spec{name: name, version: version}}
}

// Description sets the free-text description (at most 4096 characters).
func (b *Builder) Description(s string) *Builder {
	b.s.description = s
	return b
}

// Trigger starts an instance whenever a domain event arrives on subject (a concrete subject under
// "events."), taking the business key from the field key of its JSON payload.
func (b *Builder) Trigger(subject, key string) *Builder {
	b.s.trigger = &saga.Trigger{Subject: subject, Key: key}
	return b
}

// Pivot names the step after whose success the saga must complete: every step after it is
// retried forward (saga.RecoveryRetryForward) and must not have a compensation.
func (b *Builder) Pivot(step string) *Builder {
	b.s.pivot = step
	return b
}

// DefaultTimeout sets the timeout of the steps that do not set their own (built-in: 30s).
func (b *Builder) DefaultTimeout(d time.Duration) *Builder {
	b.s.defaults.timeout = optionalDuration(d)
	return b
}

// DefaultRetry sets the retry policy of the steps that do not set their own; its zero fields take
// the built-in values (3 attempts, backoff 1s, max backoff 30s, jitter 0.2).
func (b *Builder) DefaultRetry(p saga.RetryPolicy) *Builder {
	b.s.defaults.retry = retryFromPolicy(p)
	return b
}

// DefaultCompensationRetry sets the compensation retry policy of the steps that do not set their
// own; its zero fields take the built-in values (10 attempts, backoff 1s, max backoff 1m,
// jitter 0.2).
func (b *Builder) DefaultCompensationRetry(p saga.RetryPolicy) *Builder {
	b.s.defaults.compensationRetry = retryFromPolicy(p)
	return b
}

// Step appends a step that sends command to service; set its optional fields on the StepBuilder
// it returns.
func (b *Builder) Step(name, service, command string) *StepBuilder {
	b.s.steps = append(b.s.steps, stepSpec{name: name, service: service, command: command})
	return &StepBuilder{b: b, i: len(b.s.steps) - 1}
}

// Build fills every default, validates the definition and returns it. The error is an ErrorList,
// matching ErrInvalid, with every problem; its Field paths are those of the YAML format
// ("steps[1].retry.backoff") and it has no positions. Build may be called again after more
// changes; each call returns a new Definition.
func (b *Builder) Build() (*saga.Definition, error) {
	var errs ErrorList
	d := b.s.resolve(func(field, msg string) {
		errs = append(errs, &Error{Field: field, Msg: msg})
	})
	if err := errs.err(); err != nil {
		return nil, err
	}
	return d, nil
}

// Compensation sets the command that undoes the step.
func (s *StepBuilder) Compensation(command string) *StepBuilder {
	s.spec().compensation = command
	return s
}

// Recovery sets what happens when the step does not succeed: saga.RecoveryCompensate or
// saga.RecoveryRetryForward. Left unset, it is compensate for a step with a compensation and
// retry_forward for one without, and for every step after the pivot.
func (s *StepBuilder) Recovery(r saga.Recovery) *StepBuilder {
	s.spec().recovery = r
	return s
}

// Timeout sets how long one attempt of the step waits for its reply.
func (s *StepBuilder) Timeout(d time.Duration) *StepBuilder {
	s.spec().timeout = optionalDuration(d)
	return s
}

// Retry sets the step's retry policy; its zero fields take the definition's defaults.
func (s *StepBuilder) Retry(p saga.RetryPolicy) *StepBuilder {
	s.spec().retry = retryFromPolicy(p)
	return s
}

// CompensationRetry sets the retry policy of the step's compensation; its zero fields take the
// definition's defaults.
func (s *StepBuilder) CompensationRetry(p saga.RetryPolicy) *StepBuilder {
	s.spec().compensationRetry = retryFromPolicy(p)
	return s
}

// Step appends the next step; see Builder.Step.
func (s *StepBuilder) Step(name, service, command string) *StepBuilder {
	return s.b.Step(name, service, command)
}

// Build builds the definition; see Builder.Build.
func (s *StepBuilder) Build() (*saga.Definition, error) {
	return s.b.Build()
}

func (s *StepBuilder) spec() *stepSpec { return &s.b.s.steps[s.i] }

func optionalDuration(d time.Duration) *time.Duration {
	if d == 0 {
		return nil
	}
	return &d
}

// retryFromPolicy turns a RetryPolicy whose zero fields mean "not given" into a retrySpec.
func retryFromPolicy(p saga.RetryPolicy) *retrySpec {
	r := &retrySpec{backoff: optionalDuration(p.Backoff), maxBackoff: optionalDuration(p.MaxBackoff)}
	if p.MaxAttempts != 0 {
		r.maxAttempts = &p.MaxAttempts
	}
	switch p.Jitter {
	case 0:
	case NoJitter:
		var zero float64
		r.jitter = &zero
	default:
		r.jitter = &p.Jitter
	}
	return r
}
