// Package orders is the order service of the order example: it keeps the orders table
// (status created, cancelled or completed) and answers CreateOrder and its compensation
// CancelOrder.
package orders

import (
	"context"
	_ "embed" // the schema
	"encoding/json"
	"fmt"

	"github.com/jmoiron/sqlx"

	"github.com/sagaflow/sagaflow/examples/order"
	"github.com/sagaflow/sagaflow/participant"
)

//go:embed schema.sql
var schema string

// Commands of the service, as order-fulfilment.yaml names them.
const (
	CommandCreate = "CreateOrder"
	CommandCancel = "CancelOrder"
)

// Order statuses.
const (
	StatusCreated   = "created"
	StatusCancelled = "cancelled"
	StatusCompleted = "completed"
)

// Migrate creates the service's tables in db (its own database).
func Migrate(ctx context.Context, db *sqlx.DB) error {
	return order.ApplySchema(ctx, db, "order", schema)
}

// Options configures the service; the zero value injects no failures.
type Options struct {
	Faults order.Faults
}

// Register registers the service's handlers on p.
func Register(p *participant.Participant, opts Options) {
	s := newService(opts)
	p.Handle(CommandCreate, s.create)
	p.Compensate(CommandCancel, s.cancel)
}

type service struct {
	inj *order.Injector
}

func newService(opts Options) *service { return &service{inj: order.NewInjector(opts.Faults)} }

const insertOrder = `INSERT INTO orders (order_id, saga_id, customer, items, amount_cents, status) VALUES (?, ?, ?, ?, ?, 'created') ON CONFLICT (order_id) DO NOTHING`

func (s *service) create(ctx context.Context, tx *sqlx.Tx, cmd participant.Command) (participant.Result, error) {
	if err := s.inj.Disturb(ctx); err != nil {
		return participant.Result{}, err
	}
	var in order.Input
	if err := cmd.Input(&in); err != nil {
		return participant.Failure(err.Error()), nil
	}
	if err := in.Validate(); err != nil {
		return participant.Failure("invalid order: " + err.Error()), nil
	}
	items, err := json.Marshal(in.Items)
	if err != nil {
		return participant.Result{}, fmt.Errorf("encode items: %w", err)
	}
	r, err := tx.ExecContext(ctx, tx.Rebind(insertOrder), in.OrderID, cmd.SagaID, in.Customer, string(items), in.AmountCents)
	if err != nil {
		return participant.Result{}, fmt.Errorf("insert order %s: %w", in.OrderID, err)
	}
	if n, err := r.RowsAffected(); err != nil {
		return participant.Result{}, fmt.Errorf("insert order %s: %w", in.OrderID, err)
	} else if n == 0 {
		return participant.Failure(fmt.Sprintf("order %s already exists", in.OrderID)), nil
	}
	return participant.Success(map[string]string{"order_id": in.OrderID, "status": StatusCreated}), nil
}

const cancelOrder = `UPDATE orders SET status = 'cancelled', updated_at = CURRENT_TIMESTAMP WHERE order_id = ? AND saga_id = ? AND status = 'created'`

func (s *service) cancel(ctx context.Context, tx *sqlx.Tx, cmd participant.Command) (participant.Result, error) {
	if err := s.inj.Disturb(ctx); err != nil {
		return participant.Result{}, err
	}
	var in order.Input
	if err := cmd.Input(&in); err != nil {
		return participant.Result{}, err // the order was created from this input, so this is a bug: keep it visible
	}
	r, err := tx.ExecContext(ctx, tx.Rebind(cancelOrder), in.OrderID, cmd.SagaID)
	if err != nil {
		return participant.Result{}, fmt.Errorf("cancel order %s: %w", in.OrderID, err)
	}
	n, err := r.RowsAffected()
	if err != nil {
		return participant.Result{}, fmt.Errorf("cancel order %s: %w", in.OrderID, err)
	}
	return participant.Success(map[string]any{"order_id": in.OrderID, "cancelled": n > 0}), nil
}
