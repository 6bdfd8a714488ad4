package shipping

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

func TestShipping(t *testing.T) {
	t.Parallel()
	ordertest.EachDB(t, func(t *testing.T, db *sqlx.DB) {
		require.NoError(t, Migrate(t.Context(), db))
		res, err := ordertest.Handle(t, db, newService(Options{}).schedule, "saga-1", ordertest.Order)
		require.NoError(t, err)
		require.Equal(t, "success", res.Outcome())
		require.Contains(t, string(res.Output()), "shipment_id")
		require.Equal(t, 1, ordertest.Count(t, db, `SELECT COUNT(*) FROM shipping_shipments WHERE order_id = 'o-1' AND saga_id = 'saga-1' AND status = 'scheduled'`))

		res, err = ordertest.Handle(t, db, newService(Options{FailureRate: 1}).schedule, "saga-2", order.Input{OrderID: "o-2", Items: ordertest.Order.Items})
		require.NoError(t, err)
		require.Equal(t, "failure", res.Outcome())
		require.Equal(t, "no carrier available (injected)", res.Reason())
		require.Equal(t, 0, ordertest.Count(t, db, `SELECT COUNT(*) FROM shipping_shipments WHERE order_id = 'o-2'`))
	})
	down := newService(Options{Faults: order.Faults{UnavailableRate: 1}})
	_, err := down.schedule(context.Background(), nil, participant.Command{})
	require.ErrorIs(t, err, order.ErrUnavailable)
	slow := newService(Options{Faults: order.Faults{Latency: time.Hour}})
	_, err = slow.schedule(ordertest.Cancelled(), nil, participant.Command{})
	require.ErrorIs(t, err, context.Canceled)
}
