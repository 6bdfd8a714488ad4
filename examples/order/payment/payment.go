// Package payment is the payment service of the order example: a ledger of charges and refunds.
// It answers ChargePayment and its compensation RefundPayment; a refund is written only for an
// existing charge, and only once.
package payment

import (
	"context"
	_ "embed" // the schema
	"fmt"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/sagaflow/sagaflow/examples/order"
	"github.com/sagaflow/sagaflow/participant"
)

//go:embed schema.sql
var schema string

// Commands of the service, as order-fulfilment.yaml names them.
const (
	CommandCharge = "ChargePayment"
	CommandRefund = "RefundPayment"
)

// Ledger entry kinds.
const (
	KindCharge = "charge"
	KindRefund = "refund"
)

// Migrate creates the service's tables in db (its own database).
func Migrate(ctx context.Context, db *sqlx.DB) error {
	return order.ApplySchema(ctx, db, "payment", schema)
}

// Options configures the service; the zero value injects no failures.
type Options struct {
	// DeclineRate is the share of orders whose card is declined (decided per order id, see
	// order.Injector.Decide).
	DeclineRate float64
	Faults      order.Faults
}

// Register registers the service's handlers on p.
func Register(p *participant.Participant, opts Options) {
	s := newService(opts)
	p.Handle(CommandCharge, s.charge)
	p.Compensate(CommandRefund, s.refund)
}

type service struct {
	opts Options
	inj  *order.Injector
}

func newService(opts Options) *service {
	return &service{opts: opts, inj: order.NewInjector(opts.Faults)}
}

const insertEntry = `INSERT INTO payment_ledger (id, order_id, saga_id, kind, amount_cents, charge_id) VALUES (?, ?, ?, ?, ?, ?)`

func (s *service) charge(ctx context.Context, tx *sqlx.Tx, cmd participant.Command) (participant.Result, error) {
	if err := s.inj.Disturb(ctx); err != nil {
		return participant.Result{}, err
	}
	var in order.Input
	if err := cmd.Input(&in); err != nil {
		return participant.Failure(err.Error()), nil
	}
	if s.authorize(ctx, in) {
		return participant.Failure("card declined (injected)"), nil
	}
	if in.AmountCents < 0 {
		return participant.Failure(fmt.Sprintf("amount %d cents is negative", in.AmountCents)), nil
	}
	id := uuid.NewString()
	if _, err := tx.ExecContext(ctx, tx.Rebind(insertEntry), id, in.OrderID, cmd.SagaID, KindCharge, in.AmountCents, nil); err != nil {
		return participant.Result{}, fmt.Errorf("charge order %s: %w", in.OrderID, err)
	}
	return participant.Success(map[string]any{"charge_id": id, "amount_cents": in.AmountCents}), nil
}

// authorize stands for the call to a card gateway, and reports whether the card was declined. It
// shows how a handler's own work joins the saga's trace: a span started from the handler's context
// is a child of the participant's span for the command.
func (s *service) authorize(ctx context.Context, in order.Input) (declined bool) {
	tracer := trace.SpanFromContext(ctx).TracerProvider().Tracer("github.com/sagaflow/sagaflow/examples/order/payment")
	_, span := tracer.Start(ctx, "authorize card", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("order.id", in.OrderID), attribute.Int64("payment.amount_cents", in.AmountCents)))
	defer span.End()
	declined = s.inj.Decide("decline", in.OrderID, s.opts.DeclineRate)
	if declined {
		span.SetStatus(codes.Error, "card declined")
	}
	return declined
}

// unrefunded lists this saga's charges that have no refund yet.
const unrefunded = `SELECT c.id, c.order_id, c.amount_cents FROM payment_ledger c
WHERE c.saga_id = ? AND c.kind = 'charge'
  AND NOT EXISTS (SELECT 1 FROM payment_ledger r WHERE r.kind = 'refund' AND r.charge_id = c.id)
ORDER BY c.id`

func (s *service) refund(ctx context.Context, tx *sqlx.Tx, cmd participant.Command) (participant.Result, error) {
	if err := s.inj.Disturb(ctx); err != nil {
		return participant.Result{}, err
	}
	var charges []struct {
		ID          string `db:"id"`
		OrderID     string `db:"order_id"`
		AmountCents int64  `db:"amount_cents"`
	}
	if err := tx.SelectContext(ctx, &charges, tx.Rebind(unrefunded), cmd.SagaID); err != nil {
		return participant.Result{}, fmt.Errorf("read charges: %w", err)
	}
	ids := make([]string, 0, len(charges))
	for _, c := range charges {
		id := uuid.NewString()
		if _, err := tx.ExecContext(ctx, tx.Rebind(insertEntry), id, c.OrderID, cmd.SagaID, KindRefund, c.AmountCents, c.ID); err != nil {
			return participant.Result{}, fmt.Errorf("refund charge %s: %w", c.ID, err)
		}
		ids = append(ids, id)
	}
	return participant.Success(map[string]any{"refund_ids": ids}), nil
}
