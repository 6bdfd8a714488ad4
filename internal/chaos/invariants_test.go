package chaos_test

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/jmoiron/sqlx"

	order "github.com/sagaflow/sagaflow/examples/order"
)

// Saga statuses the checks expect.
const (
	statusCompleted   = "completed"
	statusCompensated = "compensated"
)

// dbs are the system's five databases, opened by the test.
type dbs struct {
	orch                                 *sqlx.DB
	orders, inventory, payment, shipping *sqlx.DB
}

func (d dbs) all() map[string]*sqlx.DB {
	return map[string]*sqlx.DB{orchestratorDB: d.orch, order.ServiceOrder: d.orders, order.ServiceInventory: d.inventory,
		order.ServicePayment: d.payment, order.ServiceShipping: d.shipping}
}

// instanceRow is a saga as the orchestrators' database holds it.
type instanceRow struct {
	ID          string `db:"id"`
	BusinessKey string `db:"business_key"`
	Status      string `db:"status"`
	Attention   string `db:"attention"`
}

const (
	// unfinished counts the sagas not in a final status.
	unfinished = `SELECT count(*) FROM sagaflow_instances WHERE definition = $1 AND status NOT IN ('completed', 'compensated', 'failed')`
	// countSagas counts the sagas of the definition.
	countSagas = `SELECT count(*) FROM sagaflow_instances WHERE definition = $1`
	// unpublished counts the outbox rows not (yet) published, quarantined ones included.
	unpublished = `SELECT count(*) FROM sagaflow_outbox WHERE published_at IS NULL`
)

// counts is what the checks counted, for the summary.
type counts struct {
	sagas, completed, compensated int
}

// checkInvariants checks the business across the five databases against the orders placed, with
// SQL of its own (not the example driver's checker), and returns one line per violation.
func checkInvariants(ctx context.Context, d dbs, orders map[string]order.Input, sagaIDs map[string]string) (counts, []string, error) {
	var c counts
	var v []string
	add := func(format string, args ...any) { v = append(v, fmt.Sprintf(format, args...)) }

	// The orchestrator: one saga per order placed, none of another order, each finished.
	var doubled []struct {
		Key string `db:"business_key"`
		N   int    `db:"n"`
	}
	if err := d.orch.SelectContext(ctx, &doubled, `SELECT business_key, count(*) AS n FROM sagaflow_instances
		WHERE definition = $1 GROUP BY business_key HAVING count(*) > 1`, order.Definition); err != nil {
		return c, nil, fmt.Errorf("read doubled sagas: %w", err)
	}
	for _, r := range doubled {
		add("order %s: %d sagas", r.Key, r.N)
	}
	var instances []instanceRow
	if err := d.orch.SelectContext(ctx, &instances, `SELECT id, business_key, status, attention FROM sagaflow_instances
		WHERE definition = $1`, order.Definition); err != nil {
		return c, nil, fmt.Errorf("read sagas: %w", err)
	}
	status := map[string]string{} // order id → saga status
	sagaOf := map[string]string{} // order id → saga id
	for _, in := range instances {
		c.sagas++
		if _, ok := orders[in.BusinessKey]; !ok {
			add("saga %s: business key %q is no order the test placed", in.ID, in.BusinessKey)
			continue
		}
		status[in.BusinessKey], sagaOf[in.BusinessKey] = in.Status, in.ID
		if id, ok := sagaIDs[in.BusinessKey]; ok && id != in.ID {
			add("order %s: the API answered saga %s, the database has %s", in.BusinessKey, id, in.ID)
		}
		switch in.Status {
		case statusCompleted:
			c.completed++
		case statusCompensated:
			c.compensated++
		default:
			add("order %s: saga %s ended %s", in.BusinessKey, in.ID, in.Status)
		}
		if in.Attention != "" {
			add("order %s: saga %s needs an operator: %s", in.BusinessKey, in.ID, in.Attention)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(orders)) {
		if _, ok := status[id]; !ok {
			add("order %s: placed, but no saga (lost)", id)
		}
	}
	var twice []struct {
		SagaID  string `db:"saga_id"`
		Step    string `db:"step"`
		Attempt int    `db:"attempt"`
		Action  string `db:"action"`
		N       int    `db:"n"`
	}
	if err := d.orch.SelectContext(ctx, &twice, `SELECT saga_id, step, attempt, action, count(*) AS n FROM sagaflow_history
		WHERE kind = 'reply' GROUP BY saga_id, step, attempt, action HAVING count(*) > 1`); err != nil {
		return c, nil, fmt.Errorf("read replies applied twice: %w", err)
	}
	for _, r := range twice {
		add("saga %s: reply to %s attempt %d (%s) applied %d times", r.SagaID, r.Step, r.Attempt, r.Action, r.N)
	}

	// known reports a service's row of an order the test did not place.
	known := func(service, orderID string) bool {
		if _, ok := orders[orderID]; !ok {
			add("%s: a row for order %q, which the test did not place", service, orderID)
			return false
		}
		return true
	}

	// The order service: a completed saga's order stands, a compensated saga's is cancelled or was
	// never created.
	var orderRows []struct {
		OrderID string `db:"order_id"`
		SagaID  string `db:"saga_id"`
		Status  string `db:"status"`
	}
	if err := d.orders.SelectContext(ctx, &orderRows, `SELECT order_id, saga_id, status FROM orders`); err != nil {
		return c, nil, fmt.Errorf("read orders: %w", err)
	}
	orderStatus := map[string]string{}
	for _, r := range orderRows {
		if !known("order", r.OrderID) {
			continue
		}
		orderStatus[r.OrderID] = r.Status
		if r.SagaID != sagaOf[r.OrderID] {
			add("order %s: created by saga %s, its saga is %s", r.OrderID, r.SagaID, sagaOf[r.OrderID])
		}
	}

	// Inventory, per order: exactly one reservation (one saga's lines) holding the order's items
	// for a completed saga; nothing held (reserved minus released is zero) for a compensated one.
	var held []struct {
		OrderID string `db:"order_id"`
		Sagas   int    `db:"sagas"`
		SagaID  string `db:"saga_id"`
		Lines   int    `db:"lines"`
		Held    int64  `db:"held"`
		Ever    int64  `db:"ever"`
	}
	if err := d.inventory.SelectContext(ctx, &held, `SELECT order_id, count(DISTINCT saga_id) AS sagas, min(saga_id) AS saga_id,
		count(*) AS lines, COALESCE(sum(qty) FILTER (WHERE status = 'reserved'), 0) AS held, sum(qty) AS ever
		FROM inventory_reservations GROUP BY order_id`); err != nil {
		return c, nil, fmt.Errorf("read reservations: %w", err)
	}
	heldBy := map[string]int64{}
	reservedBy := map[string]bool{}
	for _, r := range held {
		if !known("inventory", r.OrderID) {
			continue
		}
		reservedBy[r.OrderID], heldBy[r.OrderID] = true, r.Held
		if r.Sagas != 1 || r.SagaID != sagaOf[r.OrderID] {
			add("order %s: reservations of %d sagas (first %s), its saga is %s", r.OrderID, r.Sagas, r.SagaID, sagaOf[r.OrderID])
		}
		in := orders[r.OrderID]
		if want := len(skus(in)); r.Lines != want {
			add("order %s: %d reservation lines, the order has %d SKUs", r.OrderID, r.Lines, want)
		}
		if r.Ever != totalQty(in) {
			add("order %s: reserved %d units, the order has %d", r.OrderID, r.Ever, totalQty(in))
		}
	}
	// Stock is conserved, and what is taken is exactly what the completed orders hold.
	var stock []struct {
		SKU   string `db:"sku"`
		Taken int64  `db:"taken"`
		Held  int64  `db:"held"`
	}
	if err := d.inventory.SelectContext(ctx, &stock, `SELECT s.sku, s.initial - s.available AS taken, COALESCE(r.held, 0) AS held
		FROM inventory_stock s LEFT JOIN (SELECT sku, sum(qty) AS held FROM inventory_reservations WHERE status = 'reserved' GROUP BY sku) r
		ON r.sku = s.sku`); err != nil {
		return c, nil, fmt.Errorf("read stock: %w", err)
	}
	wantTaken := map[string]int64{}
	for id, in := range orders {
		if status[id] == statusCompleted {
			for _, it := range in.Items {
				wantTaken[it.SKU] += int64(it.Qty)
			}
		}
	}
	for _, s := range stock {
		if s.Taken != s.Held {
			add("stock of %s: %d taken, %d held by reservations", s.SKU, s.Taken, s.Held)
		}
		if s.Taken != wantTaken[s.SKU] {
			add("stock of %s: %d taken, the completed orders hold %d", s.SKU, s.Taken, wantTaken[s.SKU])
		}
	}

	// Payment, per order: one charge of the order's amount and no refund for a completed saga; for
	// a compensated one every charge refunded once, refunds equal to charges (net zero).
	var ledger []struct {
		OrderID  string `db:"order_id"`
		Sagas    int    `db:"sagas"`
		SagaID   string `db:"saga_id"`
		Charges  int    `db:"charges"`
		Refunds  int    `db:"refunds"`
		Charged  int64  `db:"charged"`
		Refunded int64  `db:"refunded"`
	}
	if err := d.payment.SelectContext(ctx, &ledger, `SELECT order_id, count(DISTINCT saga_id) AS sagas, min(saga_id) AS saga_id,
		count(*) FILTER (WHERE kind = 'charge') AS charges, count(*) FILTER (WHERE kind = 'refund') AS refunds,
		COALESCE(sum(amount_cents) FILTER (WHERE kind = 'charge'), 0) AS charged,
		COALESCE(sum(amount_cents) FILTER (WHERE kind = 'refund'), 0) AS refunded
		FROM payment_ledger GROUP BY order_id`); err != nil {
		return c, nil, fmt.Errorf("read the payments ledger: %w", err)
	}
	type money struct {
		charges, refunds  int
		charged, refunded int64
	}
	paid := map[string]money{}
	for _, r := range ledger {
		if !known("payment", r.OrderID) {
			continue
		}
		paid[r.OrderID] = money{r.Charges, r.Refunds, r.Charged, r.Refunded}
		if r.Sagas != 1 || r.SagaID != sagaOf[r.OrderID] {
			add("order %s: ledger entries of %d sagas (first %s), its saga is %s", r.OrderID, r.Sagas, r.SagaID, sagaOf[r.OrderID])
		}
		if r.Charges > 1 {
			add("order %s: charged %d times", r.OrderID, r.Charges)
		}
	}
	var badRefunds []struct {
		ID     string `db:"id"`
		Reason string `db:"reason"`
	}
	if err := d.payment.SelectContext(ctx, &badRefunds, `SELECT r.id, 'refund of no charge of its saga and amount' AS reason
		FROM payment_ledger r LEFT JOIN payment_ledger c
		ON c.id = r.charge_id AND c.kind = 'charge' AND c.saga_id = r.saga_id AND c.amount_cents = r.amount_cents
		WHERE r.kind = 'refund' AND c.id IS NULL
		UNION ALL
		SELECT charge_id, 'charge refunded ' || count(*) || ' times' FROM payment_ledger WHERE kind = 'refund'
		GROUP BY charge_id HAVING count(*) > 1`); err != nil {
		return c, nil, fmt.Errorf("read refunds: %w", err)
	}
	for _, r := range badRefunds {
		add("payment ledger %s: %s", r.ID, r.Reason)
	}

	// Shipping, per order: one shipment for a completed saga, none for a compensated one.
	var shipments []struct {
		OrderID string `db:"order_id"`
		N       int    `db:"n"`
		SagaID  string `db:"saga_id"`
	}
	if err := d.shipping.SelectContext(ctx, &shipments, `SELECT order_id, count(*) AS n, min(saga_id) AS saga_id
		FROM shipping_shipments GROUP BY order_id`); err != nil {
		return c, nil, fmt.Errorf("read shipments: %w", err)
	}
	shipped := map[string]int{}
	for _, r := range shipments {
		if !known("shipping", r.OrderID) {
			continue
		}
		shipped[r.OrderID] = r.N
		if r.SagaID != sagaOf[r.OrderID] {
			add("order %s: shipped by saga %s, its saga is %s", r.OrderID, r.SagaID, sagaOf[r.OrderID])
		}
	}

	// Each order by its saga's outcome.
	for _, id := range slices.Sorted(maps.Keys(status)) {
		in, m := orders[id], paid[id]
		switch status[id] {
		case statusCompleted:
			if orderStatus[id] != "created" {
				add("order %s: completed, but the order service has it %q", id, orderStatus[id])
			}
			if !reservedBy[id] || heldBy[id] != totalQty(in) {
				add("order %s: completed, but holds %d of %d units", id, heldBy[id], totalQty(in))
			}
			if m.charges != 1 || m.refunds != 0 || m.charged != in.AmountCents {
				add("order %s: completed, but %d charges (%d cents) and %d refunds, want one charge of %d", id, m.charges, m.charged, m.refunds, in.AmountCents)
			}
			if shipped[id] != 1 {
				add("order %s: completed with %d shipments", id, shipped[id])
			}
		case statusCompensated:
			if s, ok := orderStatus[id]; ok && s != "cancelled" {
				add("order %s: compensated, but the order is %q", id, s)
			}
			if heldBy[id] != 0 {
				add("order %s: compensated, but still holds %d units", id, heldBy[id])
			}
			if m.charged != m.refunded || m.charges != m.refunds {
				add("order %s: compensated, but charged %d cents (%d charges) and refunded %d (%d refunds)", id, m.charged, m.charges, m.refunded, m.refunds)
			}
			if shipped[id] != 0 {
				add("order %s: compensated, but shipped %d times", id, shipped[id])
			}
		}
	}
	return c, v, nil
}

func skus(in order.Input) map[string]bool {
	s := map[string]bool{}
	for _, it := range in.Items {
		s[it.SKU] = true
	}
	return s
}

func totalQty(in order.Input) int64 {
	var n int64
	for _, it := range in.Items {
		n += int64(it.Qty)
	}
	return n
}
