// Package shipping is the shipping service of the order example: it schedules shipments and
// answers ScheduleShipping (the saga's last step, which has no compensation).
package shipping

import (
	"context"
	_ "embed" // the schema
	"encoding/json"
	"fmt"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/sagaflow/sagaflow/examples/order"
	"github.com/sagaflow/sagaflow/participant"
)

//go:embed schema.sql
var schema string

// CommandSchedule is the service's command, as order-fulfilment.yaml names it.
const CommandSchedule = "ScheduleShipping"

// Migrate creates the service's tables in db (its own database).
func Migrate(ctx context.Context, db *sqlx.DB) error {
	return order.ApplySchema(ctx, db, "shipping", schema)
}

// Options configures the service; the zero value injects no failures.
type Options struct {
	// FailureRate is the share of orders no carrier accepts (decided per order id, see
	// order.Injector.Decide).
	FailureRate float64
	Faults      order.Faults
}

// Register registers the service's handler on p.
func Register(p *participant.Participant, opts Options) {
	s := newService(opts)
	p.Handle(CommandSchedule, s.schedule)
}

type service struct {
	opts Options
	inj  *order.Injector
}

func newService(opts Options) *service {
	return &service{opts: opts, inj: order.NewInjector(opts.Faults)}
}

const insertShipment = `INSERT INTO shipping_shipments (id, order_id, saga_id, items) VALUES (?, ?, ?, ?)`

func (s *service) schedule(ctx context.Context, tx *sqlx.Tx, cmd participant.Command) (participant.Result, error) {
	if err := s.inj.Disturb(ctx); err != nil {
		return participant.Result{}, err
	}
	var in order.Input
	if err := cmd.Input(&in); err != nil {
		return participant.Failure(err.Error()), nil
	}
	if s.inj.Decide("shipping-failure", in.OrderID, s.opts.FailureRate) {
		return participant.Failure("no carrier available (injected)"), nil
	}
	items, err := json.Marshal(in.Items)
	if err != nil {
		return participant.Result{}, fmt.Errorf("encode items: %w", err)
	}
	id := uuid.NewString()
	if _, err := tx.ExecContext(ctx, tx.Rebind(insertShipment), id, in.OrderID, cmd.SagaID, string(items)); err != nil {
		return participant.Result{}, fmt.Errorf("schedule shipment of order %s: %w", in.OrderID, err)
	}
	return participant.Success(map[string]string{"shipment_id": id}), nil
}
