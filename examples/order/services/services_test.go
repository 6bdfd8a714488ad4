package services_test

import (
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/examples/order"
	"github.com/sagaflow/sagaflow/examples/order/internal/ordertest"
	"github.com/sagaflow/sagaflow/examples/order/services"
	"github.com/sagaflow/sagaflow/participant"
)

func TestMigrateAndRegister(t *testing.T) {
	t.Parallel()
	js := ordertest.JetStream(t, ordertest.NATS(t))
	ordertest.EachDB(t, func(t *testing.T, db *sqlx.DB) {
		opts := services.Options{InitialStock: 7}
		for _, svc := range order.Services {
			require.NoError(t, services.Migrate(t.Context(), svc, db, opts), svc)
			p, err := participant.New(db, js, &participant.Config{Service: svc})
			require.NoError(t, err)
			require.NoError(t, services.Register(svc, p, opts))
			fwd, _ := p.Commands()
			require.NotEmpty(t, fwd, svc)
		}
		var stocked []int64
		require.NoError(t, db.SelectContext(t.Context(), &stocked, `SELECT available FROM inventory_stock`))
		require.Len(t, stocked, len(order.SKUs()))
		for _, n := range stocked {
			require.Equal(t, int64(7), n)
		}
		require.ErrorContains(t, services.Migrate(t.Context(), "billing", db, opts), `unknown service "billing"`)
	})
}
