package e2e_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/engine"
	order "github.com/sagaflow/sagaflow/examples/order"
	"github.com/sagaflow/sagaflow/examples/order/driver"
	"github.com/sagaflow/sagaflow/examples/order/services"
	"github.com/sagaflow/sagaflow/saga"
)

func TestAllSucceed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	stack := e.run(t, stackConfig{RunOrchestrator: true})
	r := drive(t, stack, 30, 8)
	requireHealthy(t, r, 30)
	require.Equal(t, 30, r.Completed)
	requireNoDuplicateTransitions(t, e.orch.DB)
}

func TestPaymentDeclinedCompensatesInReverseOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	stack := e.run(t, stackConfig{RunOrchestrator: true, Options: services.Options{PaymentDeclineRate: 1}})
	r := drive(t, stack, 10, 4)
	requireHealthy(t, r, 10)
	require.Equal(t, 10, r.Compensated)
	sagas, err := stack.Engine().List(t.Context(), engine.Filter{Definition: order.Definition})
	require.NoError(t, err)
	require.Len(t, sagas, 10)
	for _, s := range sagas {
		require.Equal(t, saga.StatusCompensated, s.Status)
		require.Equal(t, []string{"reserve-inventory", "create-order"}, compensationOrder(t, stack.Engine(), s.ID),
			"inventory released, then the order cancelled")
	}
}

func TestShippingFailureCompensatesInReverseOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	stack := e.run(t, stackConfig{RunOrchestrator: true, Options: services.Options{ShippingFailureRate: 1}})
	r := drive(t, stack, 10, 4)
	requireHealthy(t, r, 10)
	require.Equal(t, 10, r.Compensated)
	sagas, err := stack.Engine().List(t.Context(), engine.Filter{Definition: order.Definition})
	require.NoError(t, err)
	for _, s := range sagas {
		require.Equal(t, []string{"charge-payment", "reserve-inventory", "create-order"}, compensationOrder(t, stack.Engine(), s.ID),
			"payment refunded, inventory released, order cancelled")
	}
}

// TestServiceDownThenBack: inventory is down past its step's timeout and retries, so the saga
// compensates (the release waits for inventory too). Inventory comes back, handles its backlog —
// the reserve commands, whose late replies are recorded and ignored, then the release — and the
// saga ends compensated with stock conserved.
func TestServiceDownThenBack(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	stack := e.run(t, stackConfig{RunOrchestrator: true}, order.ServiceOrder, order.ServicePayment, order.ServiceShipping)
	input, err := json.Marshal(order.NewGenerator(1, "down").Next())
	require.NoError(t, err)
	id, err := stack.Starter().Start(t.Context(), "down-1", input)
	require.NoError(t, err)

	// Wait until every reserve attempt timed out and the saga compensates.
	require.Eventually(t, func() bool {
		in, err := stack.Engine().Get(t.Context(), id)
		require.NoError(t, err)
		return in.Status == saga.StatusCompensating
	}, time.Minute, 50*time.Millisecond, "the saga compensates after the reserve attempts time out")
	in, err := stack.Engine().Get(t.Context(), id)
	require.NoError(t, err)
	require.Equal(t, 3, in.Steps[1].Attempts, "every attempt was sent")

	// Inventory comes back with its own stack (same databases, same bus).
	e.run(t, stackConfig{Services: map[string]serviceDB{order.ServiceInventory: e.services[order.ServiceInventory]}})
	final, err := stack.Engine().Wait(t.Context(), id)
	require.NoError(t, err)
	require.Equal(t, saga.StatusCompensated, final.Status)

	require.Eventually(t, func() bool {
		hist, err := stack.Engine().History(t.Context(), id)
		require.NoError(t, err)
		ignored := 0
		for _, h := range hist {
			if h.Kind == engine.HistoryIgnored && h.Step == "reserve-inventory" && h.Action == "forward" {
				ignored++
			}
		}
		return ignored == 3
	}, time.Minute, 50*time.Millisecond, "the three late reserve replies are recorded as ignored")

	violations, err := driver.Check(t.Context(), driver.DBs{
		Orders: e.services[order.ServiceOrder].DB, Inventory: e.services[order.ServiceInventory].DB,
		Payment: e.services[order.ServicePayment].DB, Shipping: e.services[order.ServiceShipping].DB,
	})
	require.NoError(t, err)
	require.Empty(t, violations, "invariants hold")
}

// TestDuplicateDelivery publishes every command and every reply twice, under different message
// ids (so JetStream's duplicate window does not drop them): each transition is applied once and
// each side effect happens once.
func TestDuplicateDelivery(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	stack := e.run(t, stackConfig{RunOrchestrator: true, Options: services.Options{PaymentDeclineRate: 0.3},
		WrapPublisherFunc: newFaulty(0, true)})
	r := drive(t, stack, 60, 8)
	requireHealthy(t, r, 60)
	require.Zero(t, r.Failed)
	requireNoDuplicateTransitions(t, e.orch.DB)
	var ignored int
	require.NoError(t, e.orch.DB.GetContext(t.Context(), &ignored, `SELECT count(*) FROM sagaflow_history WHERE kind = 'ignored'`))
	require.Positive(t, ignored, "the duplicate replies were seen, recorded and ignored")
}

// TestLossyBus loses a random 10% of all published commands and replies after JetStream would
// have acknowledged them: deadlines and retries, answered by the participants' barriers, finish
// every saga with every invariant intact.
func TestLossyBus(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	stack := e.run(t, stackConfig{RunOrchestrator: true, Options: services.Options{PaymentDeclineRate: 0.2},
		WrapPublisherFunc: newFaulty(0.10, false)})
	r := drive(t, stack, 60, 16)
	requireHealthy(t, r, 60)
	requireNoDuplicateTransitions(t, e.orch.DB)
	var timeouts int
	require.NoError(t, e.orch.DB.GetContext(t.Context(), &timeouts, `SELECT count(*) FROM sagaflow_history WHERE kind = 'timeout'`))
	require.Positive(t, timeouts, "lost messages were healed by timeouts")
}
