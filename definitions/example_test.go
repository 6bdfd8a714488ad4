package definitions_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/saga"
)

func ExampleParse() {
	src := []byte(`
name: order-fulfilment
version: 1
defaults:
  timeout: 10s
steps:
  - name: reserve-inventory
    service: inventory
    command: ReserveInventory
    compensation: ReleaseInventory
  - name: charge-payment
    service: payment
    command: ChargePayment
    retry: {max_attempts: 5, backoff: 500ms}
`)
	d, err := definitions.Parse("order.yaml", src)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, s := range d.Steps {
		fmt.Printf("%s: saga.cmd.%s.%s, timeout %v, %d attempts from %v\n",
			s.Name, s.Service, s.Command, s.Timeout, s.Retry.MaxAttempts, s.Retry.Backoff)
	}
	// Output:
	// reserve-inventory: saga.cmd.inventory.ReserveInventory, timeout 10s, 3 attempts from 1s
	// charge-payment: saga.cmd.payment.ChargePayment, timeout 10s, 5 attempts from 500ms
}

func ExampleParse_errors() {
	src := []byte(`name: order-fulfilment
version: 1
steps:
  - name: charge-payment
    service: payment
    command: ChargePayment
    timeout: 5
    retries: 3
`)
	_, err := definitions.Parse("order.yaml", src)
	fmt.Println(errors.Is(err, definitions.ErrInvalid))
	var list definitions.ErrorList
	if errors.As(err, &list) {
		for _, e := range list {
			fmt.Printf("line %d, column %d, %s: %s\n", e.Line, e.Column, e.Field, e.Msg)
		}
	}
	// Output:
	// true
	// line 7, column 14, steps[0].timeout: duration needs a unit, e.g. 5s; got the number 5
	// line 8, column 5, steps[0].retries: unknown field; did you mean "retry"?
}

func ExampleNew() {
	d, err := definitions.New("order-fulfilment", 1).
		Trigger("events.order.placed", "order_id").
		DefaultTimeout(10*time.Second).
		Step("reserve-inventory", "inventory", "ReserveInventory").Compensation("ReleaseInventory").
		Step("charge-payment", "payment", "ChargePayment").Compensation("RefundPayment").
		Retry(saga.RetryPolicy{MaxAttempts: 5, Backoff: 500 * time.Millisecond, MaxBackoff: 10 * time.Second}).
		Step("schedule-shipping", "shipping", "ScheduleShipping").Timeout(time.Minute).
		Build()
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, s := range d.Steps {
		fmt.Printf("%s: timeout %v, retry %+v\n", s.Name, s.Timeout, s.Retry)
	}

	_, err = definitions.New("Order", 1).Step("a", "svc", "do-it").Build()
	fmt.Println(err)
	// Output:
	// reserve-inventory: timeout 10s, retry {MaxAttempts:3 Backoff:1s MaxBackoff:30s Jitter:0.2}
	// charge-payment: timeout 10s, retry {MaxAttempts:5 Backoff:500ms MaxBackoff:10s Jitter:0.2}
	// schedule-shipping: timeout 1m0s, retry {MaxAttempts:3 Backoff:1s MaxBackoff:30s Jitter:0.2}
	// name: must be lowercase letters, digits and dashes, not starting or ending with a dash; got "Order"
	// steps[0].command: must start with a letter and hold only letters, digits and underscores; got "do-it"
}

func ExampleRegistry() {
	r := definitions.NewRegistry()
	for _, version := range []int{1, 2} {
		d, err := definitions.New("order-fulfilment", version).Step("charge", "payment", "Charge").Build()
		if err != nil {
			fmt.Println(err)
			return
		}
		if err := r.Register(d); err != nil {
			fmt.Println(err)
			return
		}
	}
	latest, _ := r.Latest("order-fulfilment")
	fmt.Println("latest version:", latest.Version)

	changed, _ := definitions.New("order-fulfilment", 1).Step("charge", "payment", "Capture").Build()
	fmt.Println(errors.Is(r.Register(changed), definitions.ErrConflict))
	// Output:
	// latest version: 2
	// true
}
