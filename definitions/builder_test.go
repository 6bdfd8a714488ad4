package definitions_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/saga"
)

// TestBuilderMatchesYAML builds the example of DESIGN.md in Go and checks that it equals the
// YAML file.
func TestBuilderMatchesYAML(t *testing.T) {
	t.Parallel()
	fromYAML, err := definitions.ParseFile("../examples/order/order-fulfilment.yaml")
	require.NoError(t, err)

	fromGo, err := definitions.New("order-fulfilment", 1).
		Description("Reserve stock, take payment, ship.").
		Trigger("events.order.placed", "order_id").
		DefaultTimeout(10*time.Second).
		DefaultRetry(saga.RetryPolicy{MaxAttempts: 3, Backoff: 200 * time.Millisecond, MaxBackoff: 5 * time.Second}).
		Step("create-order", "order", "CreateOrder").Compensation("CancelOrder").
		Step("reserve-inventory", "inventory", "ReserveInventory").Compensation("ReleaseInventory").Timeout(5*time.Second).
		Step("charge-payment", "payment", "ChargePayment").Compensation("RefundPayment").
		Retry(saga.RetryPolicy{MaxAttempts: 5, Backoff: 500 * time.Millisecond, MaxBackoff: 10 * time.Second}).
		Step("schedule-shipping", "shipping", "ScheduleShipping").Recovery(saga.RecoveryRetryForward).
		Retry(saga.RetryPolicy{MaxAttempts: 20, Backoff: time.Second, MaxBackoff: 30 * time.Second}).
		Build()
	require.NoError(t, err)
	require.Equal(t, fromYAML, fromGo)

	// Spelled out, so that a change to the defaults shows here.
	retry := saga.RetryPolicy{MaxAttempts: 3, Backoff: 200 * time.Millisecond, MaxBackoff: 5 * time.Second, Jitter: 0.2}
	compRetry := saga.RetryPolicy{MaxAttempts: 10, Backoff: time.Second, MaxBackoff: time.Minute, Jitter: 0.2}
	require.Equal(t, &saga.Definition{
		Name:        "order-fulfilment",
		Version:     1,
		Description: "Reserve stock, take payment, ship.",
		Trigger:     &saga.Trigger{Subject: "events.order.placed", Key: "order_id"},
		Steps: []saga.Step{
			{Name: "create-order", Service: "order", Command: "CreateOrder", Compensation: "CancelOrder", Recovery: saga.RecoveryCompensate,
				Timeout: 10 * time.Second, Retry: retry, CompensationRetry: compRetry},
			{Name: "reserve-inventory", Service: "inventory", Command: "ReserveInventory", Compensation: "ReleaseInventory", Recovery: saga.RecoveryCompensate,
				Timeout: 5 * time.Second, Retry: retry, CompensationRetry: compRetry},
			{Name: "charge-payment", Service: "payment", Command: "ChargePayment", Compensation: "RefundPayment", Recovery: saga.RecoveryCompensate,
				Timeout: 10 * time.Second, Retry: saga.RetryPolicy{MaxAttempts: 5, Backoff: 500 * time.Millisecond, MaxBackoff: 10 * time.Second, Jitter: 0.2}, CompensationRetry: compRetry},
			{Name: "schedule-shipping", Service: "shipping", Command: "ScheduleShipping", Recovery: saga.RecoveryRetryForward,
				Timeout: 10 * time.Second, Retry: saga.RetryPolicy{MaxAttempts: 20, Backoff: time.Second, MaxBackoff: 30 * time.Second, Jitter: 0.2},
				CompensationRetry: compRetry},
		},
	}, fromGo)
}

func TestBuilder(t *testing.T) {
	t.Parallel()

	t.Run("BuiltInDefaults", func(t *testing.T) {
		t.Parallel()
		d, err := definitions.New("ping", 1).Step("ping", "echo", "Ping").Build()
		require.NoError(t, err)
		fromYAML, err := definitions.ParseFile("testdata/good/minimal.yaml")
		require.NoError(t, err)
		require.Equal(t, fromYAML, d)
	})

	t.Run("NoJitter", func(t *testing.T) {
		t.Parallel()
		d, err := definitions.New("ping", 1).
			DefaultRetry(saga.RetryPolicy{Jitter: 0.5}).
			DefaultCompensationRetry(saga.RetryPolicy{MaxAttempts: 2, Jitter: definitions.NoJitter}).
			Step("a", "echo", "Ping").
			Step("b", "echo", "Ping").Retry(saga.RetryPolicy{Jitter: definitions.NoJitter}).CompensationRetry(saga.RetryPolicy{Jitter: 0.1}).
			Build()
		require.NoError(t, err)
		require.Equal(t, saga.RetryPolicy{MaxAttempts: 3, Backoff: time.Second, MaxBackoff: 30 * time.Second, Jitter: 0.5}, d.Steps[0].Retry)
		require.Equal(t, saga.RetryPolicy{MaxAttempts: 2, Backoff: time.Second, MaxBackoff: time.Minute, Jitter: 0}, d.Steps[0].CompensationRetry)
		require.Equal(t, saga.RetryPolicy{MaxAttempts: 3, Backoff: time.Second, MaxBackoff: 30 * time.Second, Jitter: 0}, d.Steps[1].Retry)
		require.Equal(t, saga.RetryPolicy{MaxAttempts: 2, Backoff: time.Second, MaxBackoff: time.Minute, Jitter: 0.1}, d.Steps[1].CompensationRetry)
	})

	t.Run("Errors", func(t *testing.T) {
		t.Parallel()
		_, err := definitions.New("Bad Name", 0).
			Trigger("events.order.*", "").
			DefaultTimeout(-time.Second).
			DefaultRetry(saga.RetryPolicy{Backoff: time.Hour}).
			Step("a", "svc", "Do").Retry(saga.RetryPolicy{MaxBackoff: time.Millisecond}).
			Step("a", "svc", "do-it").
			Build()
		require.EqualError(t, err, `defaults.timeout: must be positive, got -1s
defaults.retry.backoff: must not exceed max_backoff (1h > 30s)
name: must be lowercase letters, digits and dashes, not starting or ending with a dash; got "Bad Name"
version: must be an integer >= 1, got 0
trigger.subject: must be a concrete subject: wildcards * and > are not allowed; got "events.order.*"
trigger.key: is required
steps[0].retry.backoff: must not exceed max_backoff (1s > 1ms)
steps[1].name: duplicate step name "a" (already used by steps[0])
steps[1].command: must start with a letter and hold only letters, digits and underscores; got "do-it"`)
		require.ErrorIs(t, err, definitions.ErrInvalid)
	})

	t.Run("NoSteps", func(t *testing.T) {
		t.Parallel()
		_, err := definitions.New("a", 1).Build()
		require.EqualError(t, err, "steps: is required")
	})

	t.Run("BuildTwice", func(t *testing.T) {
		t.Parallel()
		b := definitions.New("a", 1).Trigger("events.a.b", "id")
		b.Step("one", "svc", "One")
		first, err := b.Build()
		require.NoError(t, err)
		b.Step("two", "svc", "Two")
		second, err := b.Build()
		require.NoError(t, err)
		require.Len(t, first.Steps, 1)
		require.Len(t, second.Steps, 2)
		first.Trigger.Key = "changed"
		require.Equal(t, "id", second.Trigger.Key, "each Build returns its own copy")
	})
}
