// Package services is the order example's one registry of its four services: for each service
// name, how to migrate its database and how to register its handlers. The per-service process
// (cmd/order-service) runs one entry; "sagaflow dev --example order", "sagaflow bench saga" and the
// end-to-end tests run all four in one process through the same entries.
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

// service is one entry of the registry.
type service struct {
	migrate  func(ctx context.Context, db *sqlx.DB, opts Options) error
	register func(p *participant.Participant, opts Options)
}

// registry maps each name of order.Services to its service.
var registry = map[string]service{
	order.ServiceOrder: {
		migrate: func(ctx context.Context, db *sqlx.DB, _ Options) error { return orders.Migrate(ctx, db) },
		register: func(p *participant.Participant, opts Options) {
			orders.Register(p, orders.Options{Faults: opts.faults(order.ServiceOrder)})
		},
	},
	order.ServiceInventory: {
		migrate: migrateInventory,
		register: func(p *participant.Participant, opts Options) {
			inventory.Register(p, inventory.Options{OutOfStockRate: opts.OutOfStockRate, Faults: opts.faults(order.ServiceInventory)})
		},
	},
	order.ServicePayment: {
		migrate: func(ctx context.Context, db *sqlx.DB, _ Options) error { return payment.Migrate(ctx, db) },
		register: func(p *participant.Participant, opts Options) {
			payment.Register(p, payment.Options{DeclineRate: opts.PaymentDeclineRate, Faults: opts.faults(order.ServicePayment)})
		},
	},
	order.ServiceShipping: {
		migrate: func(ctx context.Context, db *sqlx.DB, _ Options) error { return shipping.Migrate(ctx, db) },
		register: func(p *participant.Participant, opts Options) {
			shipping.Register(p, shipping.Options{FailureRate: opts.ShippingFailureRate, Faults: opts.faults(order.ServiceShipping)})
		},
	},
}

// migrateInventory creates the inventory tables and stocks the catalogue.
func migrateInventory(ctx context.Context, db *sqlx.DB, opts Options) error {
	if err := inventory.Migrate(ctx, db); err != nil {
		return err
	}
	stock := opts.InitialStock
	if stock == 0 {
		stock = DefaultInitialStock
	}
	return inventory.SeedStock(ctx, db, stock, order.SKUs()...)
}

func lookup(name string) (service, error) {
	s, ok := registry[name]
	if !ok {
		return service{}, fmt.Errorf("unknown service %q: want one of %v", name, order.Services)
	}
	return s, nil
}

// Migrate creates the participant's tables (barrier, outbox) and the service's own tables in db,
// and stocks the catalogue for inventory.
func Migrate(ctx context.Context, name string, db *sqlx.DB, opts Options) error {
	s, err := lookup(name)
	if err != nil {
		return err
	}
	if err := participant.Migrate(ctx, db); err != nil {
		return fmt.Errorf("migrate %s: %w", name, err)
	}
	if err := s.migrate(ctx, db, opts); err != nil {
		return fmt.Errorf("migrate %s: %w", name, err)
	}
	return nil
}

// Register registers the handlers of service name on p (whose Config.Service must be name).
func Register(name string, p *participant.Participant, opts Options) error {
	s, err := lookup(name)
	if err != nil {
		return err
	}
	s.register(p, opts)
	return nil
}
