package driver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/examples/order"
	"github.com/sagaflow/sagaflow/examples/order/internal/ordertest"
	"github.com/sagaflow/sagaflow/examples/order/inventory"
	"github.com/sagaflow/sagaflow/examples/order/orders"
	"github.com/sagaflow/sagaflow/examples/order/payment"
	"github.com/sagaflow/sagaflow/examples/order/shipping"
)

// shop is the four services' tables in one database, written directly as the services would.
type shop struct {
	t  *testing.T
	db *sqlx.DB
}

func newShop(t *testing.T, db *sqlx.DB) *shop {
	t.Helper()
	ctx := t.Context()
	require.NoError(t, orders.Migrate(ctx, db))
	require.NoError(t, inventory.Migrate(ctx, db))
	require.NoError(t, payment.Migrate(ctx, db))
	require.NoError(t, shipping.Migrate(ctx, db))
	require.NoError(t, inventory.SeedStock(ctx, db, 1000, order.SKUs()...))
	return &shop{t: t, db: db}
}

func (s *shop) dbs() DBs { return DBs{Orders: s.db, Inventory: s.db, Payment: s.db, Shipping: s.db} }

func (s *shop) exec(q string, args ...any) {
	s.t.Helper()
	_, err := s.db.ExecContext(s.t.Context(), s.db.Rebind(q), args...)
	require.NoError(s.t, err, q)
}

// completed writes what a completed saga leaves: order, reservation, charge, shipment.
func (s *shop) completed(id string, items ...order.Item) {
	s.t.Helper()
	saga := "saga-" + id
	raw, _ := json.Marshal(items)
	s.exec(`INSERT INTO orders (order_id, saga_id, customer, items, amount_cents, status) VALUES (?, ?, 'c', ?, 100, 'created')`, id, saga, string(raw))
	for _, it := range items {
		s.exec(`UPDATE inventory_stock SET available = available - ? WHERE sku = ?`, it.Qty, it.SKU)
		s.exec(`INSERT INTO inventory_reservations (saga_id, sku, order_id, qty, status) VALUES (?, ?, ?, ?, 'reserved')`, saga, it.SKU, id, it.Qty)
	}
	s.exec(`INSERT INTO payment_ledger (id, order_id, saga_id, kind, amount_cents) VALUES (?, ?, ?, 'charge', 100)`, "ch-"+id, id, saga)
	s.exec(`INSERT INTO shipping_shipments (id, order_id, saga_id, items) VALUES (?, ?, ?, ?)`, uuid.NewString(), id, saga, string(raw))
}

// compensated writes what a saga compensated after its charge leaves.
func (s *shop) compensated(id string, items ...order.Item) {
	s.t.Helper()
	saga := "saga-" + id
	raw, _ := json.Marshal(items)
	s.exec(`INSERT INTO orders (order_id, saga_id, customer, items, amount_cents, status) VALUES (?, ?, 'c', ?, 100, 'cancelled')`, id, saga, string(raw))
	for _, it := range items {
		s.exec(`INSERT INTO inventory_reservations (saga_id, sku, order_id, qty, status) VALUES (?, ?, ?, ?, 'released')`, saga, it.SKU, id, it.Qty)
	}
	s.exec(`INSERT INTO payment_ledger (id, order_id, saga_id, kind, amount_cents) VALUES (?, ?, ?, 'charge', 100)`, "ch-"+id, id, saga)
	s.exec(`INSERT INTO payment_ledger (id, order_id, saga_id, kind, amount_cents, charge_id) VALUES (?, ?, ?, 'refund', 100, ?)`, "rf-"+id, id, saga, "ch-"+id)
}

func (s *shop) check() []string {
	s.t.Helper()
	v, err := Check(s.t.Context(), s.dbs())
	require.NoError(s.t, err)
	return v
}

var (
	apple  = order.Item{SKU: "sku-apple", Qty: 2}
	banana = order.Item{SKU: "sku-banana", Qty: 3}
)

func TestCheck(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		mutate func(s *shop)
		want   string
	}{
		{"GoodData", func(*shop) {}, ""},
		{"StockNotConserved", func(s *shop) {
			s.exec(`UPDATE inventory_stock SET available = available + 1 WHERE sku = 'sku-kiwi'`)
		}, "stock of sku-kiwi not conserved"},
		{"ReservedMinusReleasedIsNotShipped", func(s *shop) {
			s.exec(`UPDATE shipping_shipments SET items = '[{"sku":"sku-apple","qty":1}]' WHERE order_id = 'o-done'`)
		}, "order o-done: sku-apple reserved minus released is 2, shipped 1"},
		{"CompensatedStillHoldsStock", func(s *shop) {
			s.exec(`UPDATE inventory_reservations SET status = 'reserved' WHERE order_id = 'o-undone'`)
			s.exec(`UPDATE inventory_stock SET available = available - 2 WHERE sku = 'sku-apple'`)
		}, "order o-undone: compensated but still holds 2 of sku-apple"},
		{"CompensatedChargeNotRefunded", func(s *shop) {
			s.exec(`DELETE FROM payment_ledger WHERE id = 'rf-o-undone'`)
		}, "refunded 0 times, want exactly once"},
		{"CompensatedChargeRefundedTwice", func(s *shop) {
			s.exec(`INSERT INTO payment_ledger (id, order_id, saga_id, kind, amount_cents, charge_id) VALUES ('rf-2', 'o-undone', 's', 'refund', 100, 'ch-o-undone')`)
		}, "charge ch-o-undone refunded 2 times"},
		{"CompensatedButShipped", func(s *shop) {
			s.exec(`INSERT INTO shipping_shipments (id, order_id, saga_id, items) VALUES ('sh-x', 'o-undone', 's', '[]')`)
		}, "order o-undone: compensated but shipped"},
		{"ChargedTwice", func(s *shop) {
			s.exec(`INSERT INTO payment_ledger (id, order_id, saga_id, kind, amount_cents) VALUES ('ch-2', 'o-done', 's', 'charge', 100)`)
		}, "order o-done: charged 2 times"},
		{"RefundWithoutCharge", func(s *shop) {
			s.exec(`INSERT INTO payment_ledger (id, order_id, saga_id, kind, amount_cents, charge_id) VALUES ('rf-x', 'o-done', 's', 'refund', 100, 'ch-none')`)
		}, `refund rf-x for charge "ch-none" that does not exist`},
		{"CompletedWithoutCharge", func(s *shop) {
			s.exec(`DELETE FROM payment_ledger WHERE order_id = 'o-done'`)
		}, "order o-done: completed without a charge"},
		{"CompletedButRefunded", func(s *shop) {
			s.exec(`INSERT INTO payment_ledger (id, order_id, saga_id, kind, amount_cents, charge_id) VALUES ('rf-y', 'o-done', 's', 'refund', 100, 'ch-o-done')`)
		}, "order o-done: completed but charge ch-o-done refunded"},
		{"ShippedTwice", func(s *shop) {
			s.exec(`INSERT INTO shipping_shipments (id, order_id, saga_id, items) VALUES ('sh-y', 'o-done', 's', '[]')`)
		}, "order o-done: shipped 2 times"},
		{"UnknownOrder", func(s *shop) {
			s.exec(`INSERT INTO payment_ledger (id, order_id, saga_id, kind, amount_cents) VALUES ('ch-z', 'o-ghost', 's', 'charge', 100)`)
		}, "order o-ghost: reserved, charged or shipped, but the order service does not know it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ordertest.EachDB(t, func(t *testing.T, db *sqlx.DB) {
				s := newShop(t, db)
				s.completed("o-done", apple, banana)
				s.compensated("o-undone", apple)
				s.exec(`INSERT INTO orders (order_id, saga_id, customer, items, amount_cents, status) VALUES ('o-running', 's', 'c', '[]', 1, 'created')`)
				tt.mutate(s)
				v := s.check()
				if tt.want == "" {
					require.Empty(t, v)
					return
				}
				require.NotEmpty(t, v)
				require.Contains(t, strings.Join(v, "\n"), tt.want)
			})
		})
	}
}

func TestCheckWithOutcomes(t *testing.T) {
	t.Parallel()
	ordertest.EachDB(t, func(t *testing.T, db *sqlx.DB) {
		s := newShop(t, db)
		// The engine says completed, but the shipping service has no shipment.
		s.exec(`INSERT INTO orders (order_id, saga_id, customer, items, amount_cents, status) VALUES ('o-1', 's', 'c', '[]', 1, 'created')`)
		v, err := check(t.Context(), s.dbs(), map[string]string{"o-1": StatusCompleted})
		require.NoError(t, err)
		require.Contains(t, strings.Join(v, "\n"), "order o-1: completed without a shipment")
		// The engine says compensated, but the order is not cancelled.
		v, err = check(t.Context(), s.dbs(), map[string]string{"o-1": StatusCompensated})
		require.NoError(t, err)
		require.Contains(t, strings.Join(v, "\n"), "order o-1: saga compensated but the order is not cancelled")
	})
}

// shopStarter plays the orchestrator for Run's test by writing each saga's end state directly:
// orders whose id ends in an even digit complete, the others are compensated; "hang" orders never
// finish.
type shopStarter struct {
	s       *shop
	started atomic.Int32
	hang    bool
	waitErr error // Wait fails with it at once
}

func (st *shopStarter) Start(ctx context.Context, key string, input json.RawMessage) (string, error) {
	var in order.Input
	if err := json.Unmarshal(input, &in); err != nil {
		return "", err
	}
	if err := in.Validate(); err != nil {
		return "", err
	}
	if key != in.OrderID {
		return "", fmt.Errorf("business key %q is not the order id %q", key, in.OrderID)
	}
	st.started.Add(1)
	if (in.OrderID[len(in.OrderID)-1]-'0')%2 == 0 {
		st.s.completed(in.OrderID, in.Items...)
	} else {
		st.s.compensated(in.OrderID, in.Items...)
	}
	return in.OrderID, nil
}

func (st *shopStarter) Wait(ctx context.Context, id string) (string, error) {
	if st.waitErr != nil {
		return "", st.waitErr
	}
	if st.hang {
		<-ctx.Done()
		return "", ctx.Err()
	}
	if (id[len(id)-1]-'0')%2 == 0 {
		return StatusCompleted, nil
	}
	return StatusCompensated, nil
}

func TestRun(t *testing.T) {
	t.Parallel()
	ordertest.EachDB(t, func(t *testing.T, db *sqlx.DB) {
		s := newShop(t, db)
		st := &shopStarter{s: s}
		var progress bytes.Buffer
		rep, err := Run(t.Context(), Config{Orders: 20, Concurrency: 4, Starter: st, DBs: s.dbs(), Progress: &progress, Seed: 7})
		require.NoError(t, err)
		require.Equal(t, int32(20), st.started.Load())
		require.Equal(t, 20, rep.Orders)
		require.Equal(t, 10, rep.Completed)
		require.Equal(t, 10, rep.Compensated)
		require.Zero(t, rep.Stuck)
		require.Zero(t, rep.Violations, "%v", rep.ViolationDetails)
		require.GreaterOrEqual(t, rep.P99MS, rep.P50MS)
		require.Contains(t, progress.String(), "orders: 20/20 finished (completed 10, compensated 10, failed 0, stuck 0, errors 0)")

		line, err := json.Marshal(rep)
		require.NoError(t, err)
		var keys map[string]any
		require.NoError(t, json.Unmarshal(line, &keys))
		require.ElementsMatch(t, []string{"orders", "completed", "compensated", "failed", "stuck", "errors", "violations",
			"elapsed_ms", "sagas_per_s", "p50_ms", "p99_ms"}, mapKeys(keys), "violation_details is omitted when empty")
	})
}

func TestRunCountsStuck(t *testing.T) {
	t.Parallel()
	ordertest.EachDB(t, func(t *testing.T, db *sqlx.DB) {
		s := newShop(t, db)
		rep, err := Run(t.Context(), Config{Orders: 3, Concurrency: 3, Starter: &shopStarter{s: s, hang: true},
			DBs: s.dbs(), OrderTimeout: 50 * time.Millisecond})
		require.NoError(t, err)
		require.Equal(t, 3, rep.Stuck)
		require.Zero(t, rep.Completed+rep.Compensated+rep.Failed)
	})
}

// TestRunReportsWaitErrors: a saga whose wait fails (the database answered with an error) is an
// error with its cause, not a stuck saga.
func TestRunReportsWaitErrors(t *testing.T) {
	t.Parallel()
	ordertest.EachDB(t, func(t *testing.T, db *sqlx.DB) {
		s := newShop(t, db)
		cause := errors.New("pq: terminating connection due to administrator command")
		rep, err := Run(t.Context(), Config{Orders: 5, Concurrency: 2, Starter: &shopStarter{s: s, waitErr: cause}, DBs: s.dbs()})
		require.ErrorIs(t, err, cause)
		require.ErrorContains(t, err, "5 order(s) could not be started or awaited")
		require.ErrorContains(t, err, "(and 2 more)")
		require.Equal(t, 5, rep.Errors)
		require.Zero(t, rep.Stuck)
		require.Zero(t, rep.Completed+rep.Compensated+rep.Failed)
	})
}

func TestRunValidates(t *testing.T) {
	t.Parallel()
	_, err := Run(t.Context(), Config{Concurrency: -1})
	require.Error(t, err)
	for _, want := range []string{"Orders", "Concurrency", "Starter", "DBs.Orders", "DBs.Shipping"} {
		require.Contains(t, err.Error(), want)
	}
}

func mapKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}
