// Package inventory is the inventory service of the order example: stock levels per SKU and
// reservations against them. It answers ReserveInventory and its compensation ReleaseInventory.
//
// Stock is conserved: for every SKU, initial = available + the quantities of reservations still
// reserved.
package inventory

import (
	"context"
	"database/sql"
	_ "embed" // the schema
	"errors"
	"fmt"
	"slices"

	"github.com/jmoiron/sqlx"

	"github.com/sagaflow/sagaflow/examples/order"
	"github.com/sagaflow/sagaflow/participant"
)

//go:embed schema.sql
var schema string

// Commands of the service, as order-fulfilment.yaml names them.
const (
	CommandReserve = "ReserveInventory"
	CommandRelease = "ReleaseInventory"
)

// Reservation statuses.
const (
	StatusReserved = "reserved"
	StatusReleased = "released"
)

// Migrate creates the service's tables in db (its own database).
func Migrate(ctx context.Context, db *sqlx.DB) error {
	return order.ApplySchema(ctx, db, "inventory", schema)
}

const seedStock = `INSERT INTO inventory_stock (sku, initial, available) VALUES (?, ?, ?) ON CONFLICT (sku) DO NOTHING`

// SeedStock gives each of skus qty units of stock, unless the SKU is already stocked.
func SeedStock(ctx context.Context, db *sqlx.DB, qty int64, skus ...string) error {
	for _, sku := range skus {
		if _, err := db.ExecContext(ctx, db.Rebind(seedStock), sku, qty, qty); err != nil {
			return fmt.Errorf("seed stock of %s: %w", sku, err)
		}
	}
	return nil
}

// Options configures the service; the zero value injects no failures.
type Options struct {
	// OutOfStockRate is the share of orders answered "out of stock" regardless of the stock
	// level (decided per order id, see order.Injector.Decide).
	OutOfStockRate float64
	Faults         order.Faults
}

// Register registers the service's handlers on p.
func Register(p *participant.Participant, opts Options) {
	s := newService(opts)
	p.Handle(CommandReserve, s.reserve)
	p.Compensate(CommandRelease, s.release)
}

type service struct {
	opts Options
	inj  *order.Injector
}

func newService(opts Options) *service {
	return &service{opts: opts, inj: order.NewInjector(opts.Faults)}
}

const (
	takeStock         = `UPDATE inventory_stock SET available = available - ? WHERE sku = ? AND available >= ?`
	stockExists       = `SELECT available FROM inventory_stock WHERE sku = ?`
	insertReservation = `INSERT INTO inventory_reservations (saga_id, sku, order_id, qty, status) VALUES (?, ?, ?, ?, 'reserved')`
)

func (s *service) reserve(ctx context.Context, tx *sqlx.Tx, cmd participant.Command) (participant.Result, error) {
	if err := s.inj.Disturb(ctx); err != nil {
		return participant.Result{}, err
	}
	var in order.Input
	if err := cmd.Input(&in); err != nil {
		return participant.Failure(err.Error()), nil
	}
	if s.inj.Decide("out-of-stock", in.OrderID, s.opts.OutOfStockRate) {
		return participant.Failure("out of stock (injected)"), nil
	}
	// One line per SKU, in SKU order, so concurrent reservations lock stock rows in one order.
	qty := map[string]int64{}
	for _, it := range in.Items {
		qty[it.SKU] += int64(it.Qty)
	}
	skus := make([]string, 0, len(qty))
	for sku := range qty {
		skus = append(skus, sku)
	}
	slices.Sort(skus)
	reserved := make([]order.Item, 0, len(skus))
	for _, sku := range skus {
		r, err := tx.ExecContext(ctx, tx.Rebind(takeStock), qty[sku], sku, qty[sku])
		if err != nil {
			return participant.Result{}, fmt.Errorf("take stock of %s: %w", sku, err)
		}
		if n, err := r.RowsAffected(); err != nil {
			return participant.Result{}, fmt.Errorf("take stock of %s: %w", sku, err)
		} else if n == 0 {
			var available int64
			err := tx.GetContext(ctx, &available, tx.Rebind(stockExists), sku)
			if errors.Is(err, sql.ErrNoRows) {
				return participant.Failure("unknown sku " + sku), nil
			}
			if err != nil {
				return participant.Result{}, fmt.Errorf("read stock of %s: %w", sku, err)
			}
			return participant.Failure(fmt.Sprintf("out of stock: %s has %d, order needs %d", sku, available, qty[sku])), nil
		}
		if _, err := tx.ExecContext(ctx, tx.Rebind(insertReservation), cmd.SagaID, sku, in.OrderID, qty[sku]); err != nil {
			return participant.Result{}, fmt.Errorf("reserve %s: %w", sku, err)
		}
		reserved = append(reserved, order.Item{SKU: sku, Qty: int(qty[sku])})
	}
	return participant.Success(map[string]any{"reserved": reserved}), nil
}

const (
	selectReserved    = `SELECT sku, qty FROM inventory_reservations WHERE saga_id = ? AND status = 'reserved' ORDER BY sku`
	releaseResevation = `UPDATE inventory_reservations SET status = 'released', released_at = CURRENT_TIMESTAMP WHERE saga_id = ? AND sku = ? AND status = 'reserved'`
	returnStock       = `UPDATE inventory_stock SET available = available + ? WHERE sku = ?`
)

func (s *service) release(ctx context.Context, tx *sqlx.Tx, cmd participant.Command) (participant.Result, error) {
	if err := s.inj.Disturb(ctx); err != nil {
		return participant.Result{}, err
	}
	var lines []struct {
		SKU string `db:"sku"`
		Qty int64  `db:"qty"`
	}
	if err := tx.SelectContext(ctx, &lines, tx.Rebind(selectReserved), cmd.SagaID); err != nil {
		return participant.Result{}, fmt.Errorf("read reservations: %w", err)
	}
	for _, l := range lines {
		if _, err := tx.ExecContext(ctx, tx.Rebind(releaseResevation), cmd.SagaID, l.SKU); err != nil {
			return participant.Result{}, fmt.Errorf("release %s: %w", l.SKU, err)
		}
		if _, err := tx.ExecContext(ctx, tx.Rebind(returnStock), l.Qty, l.SKU); err != nil {
			return participant.Result{}, fmt.Errorf("return stock of %s: %w", l.SKU, err)
		}
	}
	return participant.Success(map[string]int{"released": len(lines)}), nil
}
