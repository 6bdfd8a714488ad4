package engine

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/internal/dbtest"
	"github.com/sagaflow/sagaflow/internal/sqlitetest"
	sdk "github.com/sagaflow/sagaflow/participant"
	"github.com/sagaflow/sagaflow/saga"
)

// TestRetryStepThroughTheBarrier retries a failed step against real participants: the billing
// service's barrier recorded the failure, and only the retry's new generation gets past it.
func TestRetryStepThroughTheBarrier(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
		w := newWorld(t)
		e := w.startEngine(db, registry(t, invoicedDefinition(t)), nil)
		var invoices atomic.Int32
		services := map[string]sdk.Handler{
			"CreateOrder": func(context.Context, *sqlx.Tx, sdk.Command) (sdk.Result, error) {
				return sdk.Success(nil), nil
			},
			"Ship": func(context.Context, *sqlx.Tx, sdk.Command) (sdk.Result, error) {
				return sdk.Success(nil), nil
			},
			"Invoice": func(_ context.Context, _ *sqlx.Tx, cmd sdk.Command) (sdk.Result, error) {
				var in struct {
					VAT string `json:"vat"`
				}
				if err := cmd.Input(&in); err != nil {
					return sdk.Result{}, err
				}
				invoices.Add(1)
				if in.VAT == "" {
					return sdk.Failure("no VAT number"), nil
				}
				return sdk.Success(map[string]any{"vat": in.VAT, "generation": cmd.Generation}), nil
			},
		}
		for service, command := range map[string]string{"order": "CreateOrder", "shipping": "Ship", "billing": "Invoice"} {
			pdb := sqlitetest.New(t) // each service has its own database
			require.NoError(t, sdk.Migrate(t.Context(), pdb))
			p, err := sdk.New(pdb, w.js, &sdk.Config{Service: service})
			require.NoError(t, err)
			p.Handle(command, services[command])
			if command == "CreateOrder" {
				p.Compensate("CancelOrder", services[command])
			}
			require.NoError(t, p.Start(t.Context()))
			t.Cleanup(func() { require.NoError(t, p.Stop(context.Background())) })
		}

		id, err := e.Start(t.Context(), "invoiced", "o-1", json.RawMessage(`{"vat":""}`), StartOptions{})
		require.NoError(t, err)
		inst := wait(t, e, id)
		require.Equal(t, saga.StatusFailed, inst.Status)
		require.Equal(t, saga.StepHalted, inst.Steps[2].Status)

		// A redrive sends the same generation: the barrier answers the recorded failure.
		require.NoError(t, e.Redrive(t.Context(), id, "sre", "try again"))
		inst = wait(t, e, id)
		require.Equal(t, saga.StatusFailed, inst.Status)
		require.Contains(t, inst.LastError, "no VAT number")
		require.Equal(t, int32(1), invoices.Load(), "the failure was answered from the barrier")

		// Fix and continue: a new generation runs the handler with the corrected input.
		require.NoError(t, e.RetryStep(t.Context(), id, &RetryOpts{Actor: "sre", Reason: "VAT number received",
			InputPatch: json.RawMessage(`{"vat":"FR123"}`)}))
		inst = wait(t, e, id)
		require.Equal(t, saga.StatusCompleted, inst.Status)
		require.JSONEq(t, `{"vat":"FR123","generation":1}`, string(inst.Data.Steps["invoice"]))
		require.Equal(t, int32(2), invoices.Load())
	})
}
