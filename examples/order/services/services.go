// Package services wires the order example's four services by name, for the per-service process
// (cmd/order-service) and for running all four in one process (sagaflow dev --example order).
package services

import (
	"context"
	"fmt"

	"github.com/jmoiron/sqlx"

	"github.com/sagaflow/sagaflow/examples/order"
	"github.com/sagaflow/sagaflow/examples/order/inventory"
	"github.com/sagaflow/sagaflow/examples/order/orders"
	"github.com/sagaflow/sagaflow/examples/order/payment"
	"github.com/sagaflow/sagaflow/examples/order/shipping"
	"github.com/sagaflow/sagaflow/participant"
)

// DefaultInitialStock is the stock each catalogue SKU starts with.
const DefaultInitialStock = 1_000_000

// Options is the failure injection of the four services. The zero value injects nothing.
type Options struct {
	// PaymentDeclineRate is the share of orders whose payment is declined.
	PaymentDeclineRate float64
	// ShippingFailureRate is the share of orders no carrier accepts.
	ShippingFailureRate float64
	// OutOfStockRate is the share of orders answered out of stock.
	OutOfStockRate float64
	// Faults are per service name (order, inventory, payment, shipping): latency and
	// unavailability. Their Seed is ignored in favour of Seed.
	Faults map[string]order.Faults
	// Seed makes the business decisions repeatable; 0: random.
	Seed int64
	// InitialStock is each catalogue SKU's stock when the inventory database is new; default
	// DefaultInitialStock.
	InitialStock int64
}

func (o Options) faults(service string) order.Faults {
	f := o.Faults[service]
	f.Seed = o.Seed
	return f
}

func known(service string) error {
	for _, s := range order.Services {
		if s == service {
			return nil
		}
	}
	return fmt.Errorf("unknown service %q: want one of %v", service, order.Services)
}

// Migrate creates the participant's tables (barrier, outbox) and the service's own tables in db,
// and stocks the catalogue for inventory.
func Migrate(ctx context.Context, service string, db *sqlx.DB, opts Options) error {
	if err := known(service); err != nil {
		return err
	}
	if err := participant.Migrate(ctx, db); err != nil {
		return fmt.Errorf("migrate %s: %w", service, err)
	}
	var err error
	switch service {
	case order.ServiceOrder:
		err = orders.Migrate(ctx, db)
	case order.ServiceInventory:
		if err = inventory.Migrate(ctx, db); err == nil {
			stock := opts.InitialStock
			if stock == 0 {
				stock = DefaultInitialStock
			}
			err = inventory.SeedStock(ctx, db, stock, order.SKUs()...)
		}
	case order.ServicePayment:
		err = payment.Migrate(ctx, db)
	case order.ServiceShipping:
		err = shipping.Migrate(ctx, db)
	}
	if err != nil {
		return fmt.Errorf("migrate %s: %w", service, err)
	}
	return nil
}

// Register registers service's handlers on p (whose Config.Service must be service).
func Register(service string, p *participant.Participant, opts Options) error {
	if err := known(service); err != nil {
		return err
	}
	switch service {
	case order.ServiceOrder:
		orders.Register(p, orders.Options{Faults: opts.faults(service)})
	case order.ServiceInventory:
		inventory.Register(p, inventory.Options{OutOfStockRate: opts.OutOfStockRate, Faults: opts.faults(service)})
	case order.ServicePayment:
		payment.Register(p, payment.Options{DeclineRate: opts.PaymentDeclineRate, Faults: opts.faults(service)})
	case order.ServiceShipping:
		shipping.Register(p, shipping.Options{FailureRate: opts.ShippingFailureRate, Faults: opts.faults(service)})
	}
	return nil
}
