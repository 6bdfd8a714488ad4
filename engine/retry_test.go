package engine

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/internal/dbtest"
	"github.com/sagaflow/sagaflow/internal/protocol"
	"github.com/sagaflow/sagaflow/saga"
)

// invoicedDefinition is an order that ships (no compensation: the point of no return) and then
// invoices: an invoice that fails halts the saga, for an operator to fix and continue.
func invoicedDefinition(t testing.TB) *saga.Definition {
	t.Helper()
	retry := saga.RetryPolicy{MaxAttempts: 2, Backoff: 100 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, Jitter: definitions.NoJitter}
	d, err := definitions.New("invoiced", 1).
		DefaultTimeout(30*time.Second).
		DefaultRetry(retry).
		DefaultCompensationRetry(retry).
		Step("create-order", "order", "CreateOrder").Compensation("CancelOrder").
		Step("ship", "shipping", "Ship").
		Step("invoice", "billing", "Invoice").
		Build()
	require.NoError(t, err)
	return d
}

// TestRetryStep is "fix and continue" (issue 11, item 3): a saga failed on a step whose input was
// wrong is retried with a corrected input, audited, and completes.
func TestRetryStep(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
		w := newWorld(t)
		e := w.startEngine(db, registry(t, invoicedDefinition(t)), nil)
		order := w.participant("order", succeed(`{}`))
		w.participant("shipping", succeed(`{"parcel":"p-1"}`))
		w.participant("billing", func(cmd protocol.Command) *answer {
			var data struct {
				Input struct {
					VAT string `json:"vat"`
				} `json:"input"`
			}
			if err := json.Unmarshal(cmd.Payload, &data); err != nil || data.Input.VAT == "" {
				return &answer{outcome: protocol.OutcomeFailure, reason: "no VAT number"}
			}
			if cmd.Generation == 0 {
				// A real participant's barrier would answer a retry of generation 0 with
				// the recorded failure; this one checks that the retry is a new generation.
				return &answer{outcome: protocol.OutcomeFailure, reason: "generation 0 failed before"}
			}
			return &answer{outcome: protocol.OutcomeSuccess, output: `{"invoice":"i-` + data.Input.VAT + `"}`}
		})

		id, err := e.Start(t.Context(), "invoiced", "o-1", json.RawMessage(`{"customer":"c-1","vat":""}`), StartOptions{})
		require.NoError(t, err)
		inst := wait(t, e, id)
		require.Equal(t, saga.StatusFailed, inst.Status)
		require.Equal(t, saga.StepHalted, inst.Steps[2].Status)
		require.True(t, inst.Steps[2].FailedReply)

		// Refused: a bad patch, a patch and an input at once, an unknown saga. Nothing recorded.
		n := len(history(t, e, id))
		require.ErrorIs(t, e.RetryStep(t.Context(), id, &RetryOpts{InputPatch: json.RawMessage(`{`)}), ErrInvalidInput)
		require.ErrorIs(t, e.RetryStep(t.Context(), id, &RetryOpts{InputPatch: json.RawMessage(`{}`), Input: json.RawMessage(`{}`)}), ErrInvalidInput)
		require.ErrorIs(t, e.RetryStep(t.Context(), "nope", nil), ErrNotFound)
		require.Len(t, history(t, e, id), n)

		require.NoError(t, e.RetryStep(t.Context(), id, &RetryOpts{Actor: "cli:alice", Reason: "customer sent VAT number",
			InputPatch: json.RawMessage(`{"vat":"FR123","customer":null}`)}))
		inst = wait(t, e, id)
		require.Equal(t, saga.StatusCompleted, inst.Status)
		require.JSONEq(t, `{"vat":"FR123"}`, string(inst.Data.Input))
		require.JSONEq(t, `{"invoice":"i-FR123"}`, string(inst.Data.Steps["invoice"]))
		require.Equal(t, 1, inst.Steps[2].Generation)
		require.Len(t, order.commands(), 1, "nothing compensated, nothing redone before the retried step")

		var retry *HistoryEntry
		for _, h := range history(t, e, id) {
			if h.Kind == HistoryRetryStep {
				retry = &h
			}
		}
		require.NotNil(t, retry, "the retry is in the history")
		require.Equal(t, "cli:alice", retry.Actor)
		var d struct {
			Reason      string          `json:"reason"`
			Step        string          `json:"step"`
			Generation  int             `json:"generation"`
			InputPatch  json.RawMessage `json:"input_patch"`
			InputBefore json.RawMessage `json:"input_before"`
			InputAfter  json.RawMessage `json:"input_after"`
		}
		require.NoError(t, json.Unmarshal(retry.Detail, &d))
		require.Equal(t, "customer sent VAT number", d.Reason)
		require.Equal(t, "invoice", d.Step)
		require.Equal(t, 1, d.Generation)
		require.JSONEq(t, `{"vat":"FR123","customer":null}`, string(d.InputPatch))
		require.JSONEq(t, `{"customer":"c-1","vat":""}`, string(d.InputBefore))
		require.JSONEq(t, `{"vat":"FR123"}`, string(d.InputAfter))

		// A completed saga cannot be retried; the refusal leaves no trace.
		n = len(history(t, e, id))
		require.ErrorIs(t, e.RetryStep(t.Context(), id, nil), saga.ErrNotRetryable)
		require.Len(t, history(t, e, id), n)
	})
}

// TestRetryStepRefusesCompensated: a saga whose compensations ran cannot go forward again.
func TestRetryStepRefusesCompensated(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
		w := newWorld(t)
		e := w.startEngine(db, registry(t, invoicedDefinition(t)), nil)
		w.participant("order", succeed(`{}`))
		w.participant("shipping", func(protocol.Command) *answer {
			return &answer{outcome: protocol.OutcomeFailure, reason: "no carrier"}
		})
		id, err := e.Start(t.Context(), "invoiced", "o-2", json.RawMessage(`{}`), StartOptions{})
		require.NoError(t, err)
		require.Equal(t, saga.StatusCompensated, wait(t, e, id).Status)
		err = e.RetryStep(t.Context(), id, &RetryOpts{Actor: "sre", Reason: "carrier back", Input: json.RawMessage(`{"carrier":"x"}`)})
		require.ErrorIs(t, err, saga.ErrNotRetryable)
		require.ErrorContains(t, err, "compensations ran")
		require.JSONEq(t, `{}`, string(get(t, e, id).Data.Input), "a refused retry changes nothing")
	})
}
