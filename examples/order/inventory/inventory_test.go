package inventory

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

func setupStock(t *testing.T, db *sqlx.DB) {
	t.Helper()
	require.NoError(t, Migrate(t.Context(), db))
	require.NoError(t, SeedStock(t.Context(), db, 10, "sku-apple", "sku-fig"))
	require.NoError(t, SeedStock(t.Context(), db, 99, "sku-apple"), "seeding a stocked sku changes nothing")
}

func available(t *testing.T, db *sqlx.DB, sku string) int {
	t.Helper()
	return ordertest.Count(t, db, `SELECT available FROM inventory_stock WHERE sku = ?`, sku)
}

func TestInventory(t *testing.T) {
	t.Parallel()
	ordertest.EachDB(t, func(t *testing.T, db *sqlx.DB) {
		setupStock(t, db)
		s := newService(Options{})
		res, err := ordertest.Handle(t, db, s.reserve, "saga-1", ordertest.Order)
		require.NoError(t, err)
		require.Equal(t, "success", res.Outcome())
		require.Equal(t, 8, available(t, db, "sku-apple"))
		require.Equal(t, 9, available(t, db, "sku-fig"))
		require.Equal(t, 2, ordertest.Count(t, db, `SELECT COUNT(*) FROM inventory_reservations WHERE saga_id = 'saga-1' AND status = 'reserved'`))

		// Not enough stock of one line: nothing is taken of any line.
		big := order.Input{OrderID: "o-2", Items: []order.Item{{SKU: "sku-apple", Qty: 1}, {SKU: "sku-fig", Qty: 50}}}
		res, err = ordertest.Handle(t, db, s.reserve, "saga-2", big)
		require.NoError(t, err)
		require.Equal(t, "failure", res.Outcome())
		require.Contains(t, res.Reason(), "out of stock: sku-fig has 9, order needs 50")
		require.Equal(t, 8, available(t, db, "sku-apple"))

		unknown := order.Input{OrderID: "o-3", Items: []order.Item{{SKU: "sku-nope", Qty: 1}}}
		res, err = ordertest.Handle(t, db, s.reserve, "saga-3", unknown)
		require.NoError(t, err)
		require.Equal(t, "failure", res.Outcome())
		require.Contains(t, res.Reason(), "unknown sku sku-nope")

		res, err = ordertest.Handle(t, db, s.release, "saga-1", ordertest.Order)
		require.NoError(t, err)
		require.JSONEq(t, `{"released":2}`, string(res.Output()))
		require.Equal(t, 10, available(t, db, "sku-apple"))
		require.Equal(t, 10, available(t, db, "sku-fig"))
		res, err = ordertest.Handle(t, db, s.release, "saga-1", ordertest.Order)
		require.NoError(t, err)
		require.JSONEq(t, `{"released":0}`, string(res.Output()), "a second release returns nothing")
		require.Equal(t, 10, available(t, db, "sku-apple"))
	})
}

func TestInventoryFaults(t *testing.T) {
	t.Parallel()
	ordertest.EachDB(t, func(t *testing.T, db *sqlx.DB) {
		setupStock(t, db)
		s := newService(Options{OutOfStockRate: 1})
		res, err := ordertest.Handle(t, db, s.reserve, "saga-1", ordertest.Order)
		require.NoError(t, err)
		require.Equal(t, "failure", res.Outcome())
		require.Contains(t, res.Reason(), "out of stock (injected)")
		require.Equal(t, 10, available(t, db, "sku-apple"))
	})
	down := newService(Options{Faults: order.Faults{UnavailableRate: 1}})
	for name, h := range map[string]participant.Handler{"reserve": down.reserve, "release": down.release} {
		_, err := h(context.Background(), nil, participant.Command{})
		require.ErrorIs(t, err, order.ErrUnavailable, name)
	}
	slow := newService(Options{Faults: order.Faults{Latency: time.Hour}})
	_, err := slow.reserve(ordertest.Cancelled(), nil, participant.Command{})
	require.ErrorIs(t, err, context.Canceled)
}
