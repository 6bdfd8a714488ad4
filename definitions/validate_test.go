package definitions_test

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/saga"
)

// validDefinition returns a valid definition built by hand, with every field set.
func validDefinition() *saga.Definition {
	retry := saga.RetryPolicy{MaxAttempts: 3, Backoff: time.Second, MaxBackoff: 30 * time.Second, Jitter: 0.2}
	return &saga.Definition{
		Name:    "billing",
		Version: 1,
		Trigger: &saga.Trigger{Subject: "events.invoice.issued", Key: "invoice_id"},
		Steps: []saga.Step{
			{Name: "charge", Service: "payment", Command: "Charge", Compensation: "Refund", Timeout: time.Second, Retry: retry, CompensationRetry: retry},
			{Name: "post", Service: "ledger", Command: "Post", Timeout: time.Second, Retry: retry, CompensationRetry: retry},
		},
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		modify func(d *saga.Definition)
		err    string // the whole error; empty for a valid definition
	}{
		{"Valid", func(*saga.Definition) {}, ""},
		{"NoTrigger", func(d *saga.Definition) { d.Trigger = nil }, ""},
		{"MaxLimits", func(d *saga.Definition) {
			d.Name = strings.Repeat("a", 64)
			d.Description = strings.Repeat("é", 4096)
			d.Trigger.Subject = "events." + strings.Repeat("x", 248)
			d.Steps[0].Timeout = 24 * time.Hour
			d.Steps[0].Retry = saga.RetryPolicy{MaxAttempts: 1000, Backoff: 24 * time.Hour, MaxBackoff: 24 * time.Hour, Jitter: 1}
			d.Steps[1].Retry = saga.RetryPolicy{MaxAttempts: 1, Backoff: time.Millisecond, MaxBackoff: time.Millisecond}
		}, ""},
		{"Empty", func(d *saga.Definition) { *d = saga.Definition{} }, "name: is required\nversion: must be an integer >= 1, got 0\nsteps: is required"},
		{"NoSteps", func(d *saga.Definition) { d.Steps = []saga.Step{} }, "steps: must have at least one step"},
		{"TooManySteps", func(d *saga.Definition) {
			d.Steps = make([]saga.Step, 257)
			for i := range d.Steps {
				d.Steps[i] = validDefinition().Steps[0]
				d.Steps[i].Name = "s" + strings.Repeat("x", i%60) + string(rune('a'+i%26)) + string(rune('a'+i/26))
			}
		}, "steps: has 257 steps, at most 256 are allowed"},
		{"DescriptionTooLong", func(d *saga.Definition) { d.Description = strings.Repeat("x", 4097) }, "description: must be at most 4096 characters, got 4097"},
		{"SubjectTooLong", func(d *saga.Definition) { d.Trigger.Subject = "events." + strings.Repeat("x", 249) }, "trigger.subject: must be at most 255 characters, got 256"},
		{"SubjectControl", func(d *saga.Definition) { d.Trigger.Subject = "events.\x00" }, `trigger.subject: must be printable ASCII; got "events.\x00"`},
		{"SubjectNonASCII", func(d *saga.Definition) { d.Trigger.Subject = "events.café" }, `trigger.subject: must be printable ASCII; got "events.café"`},
		{"SubjectTab", func(d *saga.Definition) { d.Trigger.Subject = "events.a\tb" }, `trigger.subject: must not contain whitespace; got "events.a\tb"`},
		{"SubjectOnlyEvents", func(d *saga.Definition) { d.Trigger.Subject = "events" }, `trigger.subject: must start with "events.": triggers listen on the EVENTS stream; got "events"`},
		{"SubjectTrailingDot", func(d *saga.Definition) { d.Trigger.Subject = "events.order." }, `trigger.subject: must not have empty tokens (a leading, trailing or double dot); got "events.order."`},
		{"SubjectMissing", func(d *saga.Definition) { d.Trigger.Subject = "" }, "trigger.subject: is required"},
		{"KeyTooLong", func(d *saga.Definition) { d.Trigger.Key = strings.Repeat("k", 256) }, "trigger.key: must be at most 255 characters, got 256"},
		{"KeyLeadingDigit", func(d *saga.Definition) { d.Trigger.Key = "1st" }, `trigger.key: must be a JSON field name such as order_id, or a dotted path such as order.id; got "1st"`},
		{"CommandTooLong", func(d *saga.Definition) { d.Steps[1].Command = "C" + strings.Repeat("x", 64) }, "steps[1].command: must be at most 64 characters, got 65"},
		{"NameTrailingDash", func(d *saga.Definition) { d.Steps[1].Name = "post-" }, `steps[1].name: must be lowercase letters, digits and dashes, not starting or ending with a dash; got "post-"`},
		{"ZeroStepValues", func(d *saga.Definition) {
			d.Steps[1] = saga.Step{Name: "post", Service: "ledger", Command: "Post"}
		}, strings.Join([]string{
			"steps[1].timeout: must be positive, got 0s",
			"steps[1].retry.max_attempts: must be between 1 and 1000, got 0",
			"steps[1].retry.backoff: must be positive, got 0s",
			"steps[1].retry.max_backoff: must be positive, got 0s",
			"steps[1].compensation_retry.max_attempts: must be between 1 and 1000, got 0",
			"steps[1].compensation_retry.backoff: must be positive, got 0s",
			"steps[1].compensation_retry.max_backoff: must be positive, got 0s",
		}, "\n")},
		{"RecoveryDefaults", func(d *saga.Definition) { d.Steps[0].Recovery, d.Steps[1].Recovery = "", "" }, ""},
		{"RecoveryExplicit", func(d *saga.Definition) {
			d.Steps[0].Recovery, d.Steps[1].Recovery = saga.RecoveryCompensate, saga.RecoveryRetryForward
		}, ""},
		{"RecoveryUnknown", func(d *saga.Definition) { d.Steps[1].Recovery = "retry" },
			`steps[1].recovery: must be "compensate" or "retry_forward", got "retry"`},
		{"CompensatedAfterRetryForward", func(d *saga.Definition) {
			d.Steps = append(d.Steps, saga.Step{Name: "notify", Service: "mail", Command: "Notify", Compensation: "Retract",
				Timeout: time.Second, Retry: d.Steps[0].Retry, CompensationRetry: d.Steps[0].Retry})
		}, `steps[2].recovery: step "notify" is compensated but follows "post", which cannot be undone: once "post" completes the saga only goes forward; move it before "post", or give it recovery: retry_forward`},
		{"NothingToUndoAfterRetryForward", func(d *saga.Definition) {
			d.Steps = append(d.Steps, saga.Step{Name: "audit", Service: "audit", Command: "Read", Recovery: saga.RecoveryCompensate,
				Timeout: time.Second, Retry: d.Steps[0].Retry, CompensationRetry: d.Steps[0].Retry})
		}, `steps[2].recovery: step "audit" is compensated but follows "post", which cannot be undone: once "post" completes the saga only goes forward; move it before "post", or give it recovery: retry_forward`},
		{"RetryForwardWithCompensation", func(d *saga.Definition) { d.Steps[0].Recovery = saga.RecoveryRetryForward },
			`steps[0].compensation: would never run: the step is retried forward (recovery: retry_forward) and never compensated; remove it`},
		{"Pivot", func(d *saga.Definition) { d.Pivot = "charge" }, ""},
		{"PivotUnknown", func(d *saga.Definition) { d.Pivot = "ship" }, `pivot: must name a step of the definition; there is no step "ship"`},
		{"CompensationAfterPivot", func(d *saga.Definition) {
			d.Pivot = "charge"
			d.Steps[1].Compensation = "Unpost"
		}, `steps[1].compensation: would never run: the step is retried forward (it comes after the pivot "charge") and never compensated; remove it`},
		{"CompensateAfterPivot", func(d *saga.Definition) {
			d.Pivot = "charge"
			d.Steps[1].Recovery = saga.RecoveryCompensate
		}, `steps[1].recovery: must be "retry_forward": the step comes after the pivot "charge", so it is retried forward`},
		{"JitterNaN", func(d *saga.Definition) { d.Steps[0].Retry.Jitter = math.NaN() }, "steps[0].retry.jitter: must be between 0 and 1, got NaN"},
		{"BackoffOverMax", func(d *saga.Definition) { d.Steps[0].CompensationRetry.Backoff = time.Minute }, "steps[0].compensation_retry.backoff: must not exceed max_backoff (1m > 30s)"},
		{"TimeoutBelow1ms", func(d *saga.Definition) { d.Steps[0].Timeout = time.Microsecond }, "steps[0].timeout: must be at least 1ms, got 1µs"},
		{"DuplicateAfterGap", func(d *saga.Definition) {
			d.Steps[1].Recovery = saga.RecoveryCompensate // nothing to undo
			d.Steps = append(d.Steps, d.Steps[0])
		}, `steps[2].name: duplicate step name "charge" (already used by steps[0])`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := validDefinition()
			tt.modify(d)
			err := definitions.Validate(d)
			if tt.err == "" {
				require.NoError(t, err)
				return
			}
			require.EqualError(t, err, tt.err)
			for _, e := range errorList(t, err) {
				require.Empty(t, e.File)
				require.Zero(t, e.Line)
				require.Zero(t, e.Column)
				require.NotEmpty(t, e.Field)
			}
		})
	}
}

func TestValidateNil(t *testing.T) {
	t.Parallel()
	require.EqualError(t, definitions.Validate(nil), "definition is nil")
	require.ErrorIs(t, definitions.Validate(nil), definitions.ErrInvalid)
}

func TestError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  definitions.Error
		want string
	}{
		{"Full", definitions.Error{File: "a.yaml", Line: 3, Column: 7, Field: "steps[0].name", Msg: "is required"}, "a.yaml:3:7: steps[0].name: is required"},
		{"NoColumn", definitions.Error{File: "a.yaml", Line: 3, Msg: "invalid YAML: x"}, "a.yaml:3: invalid YAML: x"},
		{"NoField", definitions.Error{File: "a.yaml", Line: 1, Column: 1, Msg: "empty document"}, "a.yaml:1:1: empty document"},
		{"NoPosition", definitions.Error{Field: "name", Msg: "is required"}, "name: is required"},
		{"PositionWithoutFile", definitions.Error{Line: 2, Column: 1, Field: "name", Msg: "is required"}, ":2:1: name: is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, tt.err.Error())
			require.ErrorIs(t, &tt.err, definitions.ErrInvalid)
		})
	}

	list := definitions.ErrorList{&tests[0].err, &tests[3].err}
	require.Equal(t, "a.yaml:3:7: steps[0].name: is required\nname: is required", list.Error())
	require.ErrorIs(t, list, definitions.ErrInvalid)
	var e *definitions.Error
	require.ErrorAs(t, list, &e)
	require.Equal(t, "steps[0].name", e.Field)
}
