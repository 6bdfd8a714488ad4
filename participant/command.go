package participant

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jmoiron/sqlx"

	"github.com/sagaflow/sagaflow/internal/protocol"
)

// Handler runs one command (or compensation) inside tx, the transaction of the service's own
// database that also records the command in the barrier and the reply in the outbox.
//
// Return Success or Failure for an answer. A returned error is transient: the transaction (this
// command's part of it) rolls back and the command is delivered again later; after
// Config.MaxDeliver deliveries it goes to the dead-letter stream. A panic is treated like an error.
// On Failure the handler's writes are rolled back too, so a business failure never leaves an
// effect behind (nothing will compensate it).
//
// A handler may be called more than once for one delivery, each time in a new transaction of
// which only the last can commit: when another command of its batch fails, the batch is handled
// again (see the package documentation). Effects outside tx must be idempotent, as they must be
// for redeliveries anyway.
type Handler func(ctx context.Context, tx *sqlx.Tx, cmd Command) (Result, error)

// Command is what a handler receives: which saga, step and attempt the command belongs to, and the
// saga's data.
type Command struct {
	// SagaID identifies the saga instance.
	SagaID string
	// Definition and Version name the workflow definition the saga runs.
	Definition string
	Version    int
	// Step is the step's name in the definition.
	Step string
	// Attempt counts the sends of this action for this step, from 1.
	Attempt int
	// Generation counts an operator's retries of the step after a failure (0 before any): each
	// generation is a new action for the barrier, so the handler runs again, typically with the
	// corrected input the operator gave.
	Generation int
	// BusinessKey is the saga's business key (for example an order id), empty when none.
	BusinessKey string
	// Name is the command name (the last token of the subject), e.g. "ChargePayment".
	Name string
	// Compensation is true for a compensation command.
	Compensation bool
	// Data is the saga's data: {"input": <start input>, "steps": {<step>: <output>, ...}}.
	Data json.RawMessage
	// Headers are the message's headers as received.
	Headers map[string]string

	// publish writes domain events to the outbox for Publish; nil outside a participant.
	publish func(ctx context.Context, tx *sqlx.Tx, subject string, msgs []*message.Message) error
}

// Publish writes msgs (domain events, for example to events.order.created) to the service's outbox
// in tx, the handler's transaction: they go out exactly once, published at once after the
// transaction commits, and never if the handler fails, answers Failure or the transaction rolls
// back. Message ids (UUIDs) left empty are assigned (UUIDv7); the handler's trace context is added.
// Outside a running participant (a handler called by a test) it returns ErrNoParticipant.
func (c Command) Publish(ctx context.Context, tx *sqlx.Tx, subject string, msgs ...*message.Message) error {
	if c.publish == nil {
		return ErrNoParticipant
	}
	return c.publish(ctx, tx, subject, msgs)
}

// sagaData is the shape of Command.Data.
type sagaData struct {
	Input json.RawMessage            `json:"input"`
	Steps map[string]json.RawMessage `json:"steps"`
}

// Input decodes the saga's start input (Data's "input") into v.
func (c Command) Input(v any) error {
	var d sagaData
	if err := json.Unmarshal(c.Data, &d); err != nil {
		return fmt.Errorf("decode saga data of saga %s: %w", c.SagaID, err)
	}
	if len(d.Input) == 0 {
		return fmt.Errorf("saga %s has no input", c.SagaID)
	}
	if err := json.Unmarshal(d.Input, v); err != nil {
		return fmt.Errorf("decode input of saga %s: %w", c.SagaID, err)
	}
	return nil
}

// StepOutput decodes the output an earlier step produced (Data's "steps"."<step>") into v. It
// reports false when that step has no output.
func (c Command) StepOutput(step string, v any) (bool, error) {
	var d sagaData
	if err := json.Unmarshal(c.Data, &d); err != nil {
		return false, fmt.Errorf("decode saga data of saga %s: %w", c.SagaID, err)
	}
	out, ok := d.Steps[step]
	if !ok || string(out) == "null" {
		return false, nil
	}
	if err := json.Unmarshal(out, v); err != nil {
		return false, fmt.Errorf("decode output of step %s of saga %s: %w", step, c.SagaID, err)
	}
	return true, nil
}

func newCommand(pc protocol.Command, headers map[string]string) Command {
	return Command{
		SagaID:       pc.SagaID,
		Definition:   pc.Definition,
		Version:      pc.Version,
		Step:         pc.Step,
		Attempt:      pc.Attempt,
		Generation:   pc.Generation,
		BusinessKey:  pc.BusinessKey,
		Name:         pc.Name,
		Compensation: pc.Action == protocol.ActionCompensate,
		Data:         pc.Payload,
		Headers:      headers,
	}
}

// Result is a handler's answer: build it with Success or Failure.
type Result struct {
	outcome protocol.Outcome
	output  json.RawMessage
	reason  string
	err     error // an output that could not be encoded
}

// Success answers that the action applied. output (any JSON-encodable value, or nil) is merged into
// the saga's data under the step's name. A value that cannot be encoded makes the handling fail
// like a transient error.
func Success(output any) Result {
	if output == nil {
		return Result{outcome: protocol.OutcomeSuccess}
	}
	if raw, ok := output.(json.RawMessage); ok {
		return Result{outcome: protocol.OutcomeSuccess, output: raw}
	}
	b, err := json.Marshal(output)
	if err != nil {
		return Result{err: fmt.Errorf("encode output: %w", err)}
	}
	return Result{outcome: protocol.OutcomeSuccess, output: b}
}

// Failure answers a business failure: the action did not apply and must not be retried; the saga
// compensates. reason is shown to operators.
func Failure(reason string) Result {
	return Result{outcome: protocol.OutcomeFailure, reason: reason}
}

// Outcome returns "success" or "failure" (empty for the zero Result), for handler tests.
func (r Result) Outcome() string { return string(r.outcome) }

// Output returns the JSON output of a Success.
func (r Result) Output() json.RawMessage { return r.output }

// Reason returns the reason of a Failure.
func (r Result) Reason() string { return r.reason }
