package payment

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

func TestPayment(t *testing.T) {
	t.Parallel()
	ordertest.EachDB(t, func(t *testing.T, db *sqlx.DB) {
		require.NoError(t, Migrate(t.Context(), db))
		s := newService(Options{})

		// A refund without a charge refunds nothing.
		res, err := ordertest.Handle(t, db, s.refund, "saga-1", ordertest.Order)
		require.NoError(t, err)
		require.JSONEq(t, `{"refund_ids":[]}`, string(res.Output()))

		res, err = ordertest.Handle(t, db, s.charge, "saga-1", ordertest.Order)
		require.NoError(t, err)
		require.Equal(t, "success", res.Outcome())
		require.Contains(t, string(res.Output()), `"amount_cents":490`)
		require.Equal(t, 1, ordertest.Count(t, db, `SELECT COUNT(*) FROM payment_ledger WHERE order_id = 'o-1' AND kind = 'charge' AND amount_cents = 490`))

		res, err = ordertest.Handle(t, db, s.refund, "saga-1", ordertest.Order)
		require.NoError(t, err)
		require.Equal(t, "success", res.Outcome())
		require.Equal(t, 1, ordertest.Count(t, db, `SELECT COUNT(*) FROM payment_ledger r JOIN payment_ledger c ON r.charge_id = c.id
			WHERE r.kind = 'refund' AND c.kind = 'charge' AND r.amount_cents = c.amount_cents AND r.order_id = 'o-1'`))
		_, err = ordertest.Handle(t, db, s.refund, "saga-1", ordertest.Order)
		require.NoError(t, err)
		require.Equal(t, 1, ordertest.Count(t, db, `SELECT COUNT(*) FROM payment_ledger WHERE kind = 'refund'`), "a charge is refunded once")
	})
}

func TestPaymentFaults(t *testing.T) {
	t.Parallel()
	ordertest.EachDB(t, func(t *testing.T, db *sqlx.DB) {
		require.NoError(t, Migrate(t.Context(), db))
		s := newService(Options{DeclineRate: 1})
		res, err := ordertest.Handle(t, db, s.charge, "saga-1", ordertest.Order)
		require.NoError(t, err)
		require.Equal(t, "failure", res.Outcome())
		require.Equal(t, "card declined (injected)", res.Reason())
		require.Equal(t, 0, ordertest.Count(t, db, `SELECT COUNT(*) FROM payment_ledger`))
	})
	down := newService(Options{Faults: order.Faults{UnavailableRate: 1}})
	for name, h := range map[string]participant.Handler{"charge": down.charge, "refund": down.refund} {
		_, err := h(context.Background(), nil, participant.Command{})
		require.ErrorIs(t, err, order.ErrUnavailable, name)
	}
	slow := newService(Options{Faults: order.Faults{Latency: time.Hour}})
	_, err := slow.charge(ordertest.Cancelled(), nil, participant.Command{})
	require.ErrorIs(t, err, context.Canceled)
}
