package order_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/examples/order"
	"github.com/sagaflow/sagaflow/examples/order/internal/ordertest"
	"github.com/sagaflow/sagaflow/examples/order/inventory"
	"github.com/sagaflow/sagaflow/examples/order/orders"
	"github.com/sagaflow/sagaflow/examples/order/payment"
	"github.com/sagaflow/sagaflow/examples/order/shipping"
	"github.com/sagaflow/sagaflow/participant"
)

// TestServicesMatchDefinition checks that each service registers exactly the commands and
// compensations order-fulfilment.yaml sends it.
func TestServicesMatchDefinition(t *testing.T) {
	t.Parallel()
	def, err := definitions.ParseFile("order-fulfilment.yaml")
	require.NoError(t, err)
	require.Equal(t, order.Definition, def.Name)
	want := map[string][2][]string{}
	for _, s := range def.Steps {
		w := want[s.Service]
		w[0] = append(w[0], s.Command)
		if s.Compensation != "" {
			w[1] = append(w[1], s.Compensation)
		}
		want[s.Service] = w
	}
	require.ElementsMatch(t, order.Services, keys(want))

	js := ordertest.JetStream(t, ordertest.NATS(t))
	db := ordertest.SQLite(t)
	register := map[string]func(p *participant.Participant){
		order.ServiceOrder:     func(p *participant.Participant) { orders.Register(p, orders.Options{}) },
		order.ServiceInventory: func(p *participant.Participant) { inventory.Register(p, inventory.Options{}) },
		order.ServicePayment:   func(p *participant.Participant) { payment.Register(p, payment.Options{}) },
		order.ServiceShipping:  func(p *participant.Participant) { shipping.Register(p, shipping.Options{}) },
	}
	for _, svc := range order.Services {
		p, err := participant.New(db, js, &participant.Config{Service: svc})
		require.NoError(t, err)
		register[svc](p)
		fwd, comp := p.Commands()
		require.ElementsMatch(t, want[svc][0], fwd, "forward commands of %s", svc)
		require.ElementsMatch(t, want[svc][1], comp, "compensations of %s", svc)
	}
}

func TestGenerator(t *testing.T) {
	t.Parallel()
	a, b := order.NewGenerator(42, "run-"), order.NewGenerator(42, "run-")
	seen := map[string]bool{}
	for range 200 {
		x, y := a.Next(), b.Next()
		require.Equal(t, x, y, "the same seed gives the same orders")
		require.NoError(t, x.Validate())
		require.False(t, seen[x.OrderID], "order ids are unique")
		seen[x.OrderID] = true
		var total int64
		skus := map[string]bool{}
		for _, it := range x.Items {
			require.False(t, skus[it.SKU], "distinct skus per order")
			skus[it.SKU] = true
			total += int64(it.Qty) * order.Catalogue[it.SKU]
		}
		require.Equal(t, total, x.AmountCents)
	}
	require.NotEqual(t, order.NewGenerator(1, "").Next(), order.NewGenerator(2, "").Next())
}

func TestInjector(t *testing.T) {
	t.Parallel()
	inj := order.NewInjector(order.Faults{Seed: 9})
	again := order.NewInjector(order.Faults{Seed: 9})
	const n = 4000
	hits := 0
	for i := range n {
		key := "ord-" + string(rune('a'+i%26)) + string(rune('0'+i%10)) + string(rune(i))
		d := inj.Decide("decline", key, 0.25)
		require.Equal(t, d, again.Decide("decline", key, 0.25), "decisions depend only on seed and key")
		require.False(t, inj.Decide("decline", key, 0))
		require.True(t, inj.Decide("decline", key, 1))
		if d {
			hits++
		}
	}
	require.InDelta(t, 0.25, float64(hits)/n, 0.05)

	down := order.NewInjector(order.Faults{UnavailableRate: 1})
	require.ErrorIs(t, down.Disturb(context.Background()), order.ErrUnavailable)
	require.NoError(t, order.NewInjector(order.Faults{}).Disturb(context.Background()))
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
