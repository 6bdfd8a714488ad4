package driver

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/sagaflow/sagaflow/examples/order"
)

// Check verifies the business invariants across the four services' databases and returns one line
// per violation (none: nil). It judges each order by what the databases say: a cancelled order is
// a compensated saga, an order with a shipment a completed one, any other order is still running.
//
// The invariants:
//   - stock is conserved: for every SKU, initial = available + quantities still reserved;
//   - reserved minus released equals shipped: a completed order's unreleased reservations are
//     exactly its shipped items, and a compensated order holds no reservation;
//   - every charge of a compensated order is refunded exactly once, and it has no shipment;
//   - no order is charged twice, shipped twice, or refunded for a charge it does not have;
//   - a completed order has a shipment and a charge that is not refunded;
//   - every reservation, charge and shipment belongs to an order the order service knows.
func Check(ctx context.Context, dbs DBs) ([]string, error) {
	return check(ctx, dbs, nil)
}

type stockRow struct {
	SKU       string `db:"sku"`
	Initial   int64  `db:"initial"`
	Available int64  `db:"available"`
}

type reservationRow struct {
	OrderID string `db:"order_id"`
	SKU     string `db:"sku"`
	Qty     int64  `db:"qty"`
	Status  string `db:"status"`
}

type ledgerRow struct {
	ID          string `db:"id"`
	OrderID     string `db:"order_id"`
	Kind        string `db:"kind"`
	AmountCents int64  `db:"amount_cents"`
	ChargeID    string `db:"charge_id"`
}

type shipmentRow struct {
	OrderID string `db:"order_id"`
	Items   string `db:"items"`
}

type orderRow struct {
	OrderID string `db:"order_id"`
	Status  string `db:"status"`
}

// check is Check with the final saga status of some orders (by order id) known from the engine;
// those orders are judged by it instead of by the databases, and orders whose saga failed (a
// compensation gave up, an operator must act) are left out of the per-order checks.
func check(ctx context.Context, dbs DBs, outcomes map[string]string) ([]string, error) {
	var (
		orders       []orderRow
		stock        []stockRow
		reservations []reservationRow
		ledger       []ledgerRow
		shipments    []shipmentRow
	)
	reads := []struct {
		what string
		err  error
	}{
		{"orders", dbs.Orders.SelectContext(ctx, &orders, `SELECT order_id, status FROM orders`)},
		{"stock", dbs.Inventory.SelectContext(ctx, &stock, `SELECT sku, initial, available FROM inventory_stock ORDER BY sku`)},
		{"reservations", dbs.Inventory.SelectContext(ctx, &reservations, `SELECT order_id, sku, qty, status FROM inventory_reservations`)},
		{"payments ledger", dbs.Payment.SelectContext(ctx, &ledger, `SELECT id, order_id, kind, amount_cents, COALESCE(charge_id, '') AS charge_id FROM payment_ledger ORDER BY id`)},
		{"shipments", dbs.Shipping.SelectContext(ctx, &shipments, `SELECT order_id, items FROM shipping_shipments`)},
	}
	for _, r := range reads {
		if r.err != nil {
			return nil, fmt.Errorf("check invariants: read %s: %w", r.what, r.err)
		}
	}

	var v []string
	add := func(format string, args ...any) { v = append(v, fmt.Sprintf(format, args...)) }

	// Stock is conserved, SKU by SKU.
	reserved := map[string]int64{}
	for _, r := range reservations {
		if r.Status == "reserved" {
			reserved[r.SKU] += r.Qty
		}
	}
	known := map[string]bool{}
	for _, s := range stock {
		known[s.SKU] = true
		if s.Initial != s.Available+reserved[s.SKU] {
			add("stock of %s not conserved: initial %d != available %d + reserved %d", s.SKU, s.Initial, s.Available, reserved[s.SKU])
		}
	}
	for _, sku := range sortedKeys(reserved) {
		if !known[sku] {
			add("stock of %s not conserved: %d reserved of an unknown sku", sku, reserved[sku])
		}
	}

	// Everything per order.
	type facts struct {
		exists, cancelled bool
		held              map[string]int64 // reserved and not released, per SKU
		shipped           map[string]int64
		shipments         int
		charges           []ledgerRow
		refunds           map[string]int // per charge id
	}
	per := map[string]*facts{}
	get := func(id string) *facts {
		f := per[id]
		if f == nil {
			f = &facts{held: map[string]int64{}, shipped: map[string]int64{}, refunds: map[string]int{}}
			per[id] = f
		}
		return f
	}
	for _, o := range orders {
		f := get(o.OrderID)
		f.exists, f.cancelled = true, o.Status == "cancelled"
	}
	for _, r := range reservations {
		if r.Status == "reserved" {
			get(r.OrderID).held[r.SKU] += r.Qty
		} else {
			get(r.OrderID)
		}
	}
	for _, s := range shipments {
		f := get(s.OrderID)
		f.shipments++
		var items []order.Item
		if err := json.Unmarshal([]byte(s.Items), &items); err != nil {
			add("order %s: shipment items unreadable: %v", s.OrderID, err)
		}
		for _, it := range items {
			f.shipped[it.SKU] += int64(it.Qty)
		}
	}
	chargeByID := map[string]ledgerRow{}
	for _, l := range ledger {
		if l.Kind == "charge" {
			get(l.OrderID).charges = append(get(l.OrderID).charges, l)
			chargeByID[l.ID] = l
		}
	}
	for _, l := range ledger {
		if l.Kind != "refund" {
			continue
		}
		c, ok := chargeByID[l.ChargeID]
		switch {
		case !ok:
			add("order %s: refund %s for charge %q that does not exist", l.OrderID, l.ID, l.ChargeID)
		case c.OrderID != l.OrderID:
			add("order %s: refund %s for charge %s of order %s", l.OrderID, l.ID, c.ID, c.OrderID)
		default:
			get(l.OrderID).refunds[l.ChargeID]++
		}
	}

	for _, id := range sortedKeys(per) {
		f := per[id]
		if !f.exists && (len(f.held) > 0 || f.shipments > 0 || len(f.charges) > 0) {
			add("order %s: reserved, charged or shipped, but the order service does not know it", id)
		}
		if len(f.charges) > 1 {
			add("order %s: charged %d times", id, len(f.charges))
		}
		if f.shipments > 1 {
			add("order %s: shipped %d times", id, f.shipments)
		}
		for _, c := range f.charges {
			if n := f.refunds[c.ID]; n > 1 {
				add("order %s: charge %s refunded %d times", id, c.ID, n)
			}
		}
		status, judged := outcomes[id]
		if !judged {
			switch {
			case f.cancelled:
				status = StatusCompensated
			case f.shipments > 0:
				status = StatusCompleted
			default:
				continue // still running, as far as the databases tell
			}
		}
		switch status {
		case StatusCompensated:
			if f.exists && !f.cancelled {
				add("order %s: saga compensated but the order is not cancelled", id)
			}
			if f.shipments > 0 {
				add("order %s: compensated but shipped", id)
			}
			for _, c := range f.charges {
				if f.refunds[c.ID] != 1 {
					add("order %s: compensated but charge %s refunded %d times, want exactly once", id, c.ID, f.refunds[c.ID])
				}
			}
			for _, sku := range sortedKeys(f.held) {
				add("order %s: compensated but still holds %d of %s (reserved minus released != shipped 0)", id, f.held[sku], sku)
			}
		case StatusCompleted:
			if !f.exists || f.cancelled {
				add("order %s: saga completed but the order is missing or cancelled", id)
			}
			if f.shipments == 0 {
				add("order %s: completed without a shipment", id)
			}
			if len(f.charges) == 0 {
				add("order %s: completed without a charge", id)
			}
			for _, c := range f.charges {
				if f.refunds[c.ID] > 0 {
					add("order %s: completed but charge %s refunded", id, c.ID)
				}
			}
			for _, sku := range sortedKeys(union(f.held, f.shipped)) {
				if f.held[sku] != f.shipped[sku] {
					add("order %s: %s reserved minus released is %d, shipped %d", id, sku, f.held[sku], f.shipped[sku])
				}
			}
		}
	}
	return v, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func union(a, b map[string]int64) map[string]int64 {
	u := make(map[string]int64, len(a)+len(b))
	for k := range a {
		u[k] = 0
	}
	for k := range b {
		u[k] = 0
	}
	return u
}
