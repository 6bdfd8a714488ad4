// Package ordertest holds what the tests of the order example's four services share: a database of
// each kind and an in-process NATS JetStream server per test, running a handler in a transaction
// the way the participant does, counting rows, a sample order. It uses only public packages, as a
// service outside this repository would.
package ordertest

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/examples/order"
	"github.com/sagaflow/sagaflow/participant"
)

var errNotSuccess = errors.New("not a success: roll back")

// Handle runs h on a command of saga for in, in a transaction of db that commits only on success,
// as the participant does (it rolls a failure's writes back).
func Handle(t *testing.T, db *sqlx.DB, h participant.Handler, saga string, in order.Input) (participant.Result, error) {
	t.Helper()
	data, err := json.Marshal(map[string]any{"input": in, "steps": map[string]any{}})
	require.NoError(t, err)
	cmd := participant.Command{SagaID: saga, Definition: order.Definition, Version: 1, Step: "step", Attempt: 1, BusinessKey: in.OrderID, Data: data}
	var res participant.Result
	var herr error
	err = inTx(t.Context(), db, func(tx *sqlx.Tx) error {
		res, herr = h(t.Context(), tx, cmd)
		if herr != nil || res.Outcome() != "success" {
			return errNotSuccess
		}
		return nil
	})
	if herr != nil {
		return res, herr
	}
	if !errors.Is(err, errNotSuccess) {
		require.NoError(t, err)
	}
	return res, nil
}

// Count runs a count query (with ? placeholders) on db.
func Count(t *testing.T, db *sqlx.DB, q string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, db.GetContext(t.Context(), &n, db.Rebind(q), args...))
	return n
}

// Order is a sample order of two lines.
var Order = order.Input{OrderID: "o-1", Customer: "c-1", Items: []order.Item{{SKU: "sku-apple", Qty: 2}, {SKU: "sku-fig", Qty: 1}}, AmountCents: 490}

// Cancelled returns a context that is already done, to show that injected latency waits on it.
func Cancelled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// inTx runs fn in a transaction of db that commits when fn returns nil.
func inTx(ctx context.Context, db *sqlx.DB, fn func(tx *sqlx.Tx) error) error {
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}
