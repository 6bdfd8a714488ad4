package orders

import (
	"context"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/examples/order"
	"github.com/sagaflow/sagaflow/examples/order/internal/ordertest"
	"github.com/sagaflow/sagaflow/participant"
)

func TestOrders(t *testing.T) {
	t.Parallel()
	ordertest.EachDB(t, func(t *testing.T, db *sqlx.DB) {
		require.NoError(t, Migrate(t.Context(), db))
		require.NoError(t, Migrate(t.Context(), db), "migrating twice is a no-op")
		s := newService(Options{})

		res, err := ordertest.Handle(t, db, s.create, "saga-1", ordertest.Order)
		require.NoError(t, err)
		require.Equal(t, "success", res.Outcome())
		require.JSONEq(t, `{"order_id":"o-1","status":"created"}`, string(res.Output()))
		require.Equal(t, 1, ordertest.Count(t, db, `SELECT COUNT(*) FROM orders WHERE order_id = 'o-1' AND status = 'created' AND amount_cents = 490`))

		res, err = ordertest.Handle(t, db, s.create, "saga-2", ordertest.Order)
		require.NoError(t, err)
		require.Equal(t, "failure", res.Outcome())
		require.Contains(t, res.Reason(), "already exists")

		bad := ordertest.Order
		bad.OrderID, bad.Items = "o-2", nil
		res, err = ordertest.Handle(t, db, s.create, "saga-3", bad)
		require.NoError(t, err)
		require.Equal(t, "failure", res.Outcome())
		require.Contains(t, res.Reason(), "items is empty")

		// Another saga cannot cancel the order; its own can, once.
		res, err = ordertest.Handle(t, db, s.cancel, "saga-2", ordertest.Order)
		require.NoError(t, err)
		require.JSONEq(t, `{"order_id":"o-1","cancelled":false}`, string(res.Output()))
		res, err = ordertest.Handle(t, db, s.cancel, "saga-1", ordertest.Order)
		require.NoError(t, err)
		require.JSONEq(t, `{"order_id":"o-1","cancelled":true}`, string(res.Output()))
		require.Equal(t, 1, ordertest.Count(t, db, `SELECT COUNT(*) FROM orders WHERE order_id = 'o-1' AND status = 'cancelled'`))
	})
}

func TestOrdersFaults(t *testing.T) {
	t.Parallel()
	down := newService(Options{Faults: order.Faults{UnavailableRate: 1}})
	for name, h := range map[string]participant.Handler{"create": down.create, "cancel": down.cancel} {
		_, err := h(context.Background(), nil, participant.Command{})
		require.ErrorIs(t, err, order.ErrUnavailable, name)
	}
	slow := newService(Options{Faults: order.Faults{Latency: time.Hour}})
	_, err := slow.create(ordertest.Cancelled(), nil, participant.Command{})
	require.ErrorIs(t, err, context.Canceled, "the handler waits out its latency until its context ends")
}
