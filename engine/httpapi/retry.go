package httpapi

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/url"

	"github.com/sagaflow/sagaflow/engine"
)

// RetryRequest is the body of POST /v1/sagas/{id}/retry: retry the failed saga's halted step,
// optionally with a corrected input — input_patch (a JSON merge patch, RFC 7386, of the saga's
// input) or input (a replacement), not both.
type RetryRequest struct {
	Reason     string          `json:"reason,omitempty"`
	InputPatch json.RawMessage `json:"input_patch,omitempty"`
	Input      json.RawMessage `json:"input,omitempty"`
}

// retry serves POST /v1/sagas/{id}/retry and answers the saga. A saga that cannot be retried
// (saga.ErrNotRetryable) is a 409 conflict; a patch that is not JSON a 400.
func (h *handler) retry(w http.ResponseWriter, r *http.Request) {
	var req RetryRequest
	if r.ContentLength != 0 && !h.decode(w, r, &req) {
		return
	}
	err := h.e.RetryStep(r.Context(), r.PathValue("id"), &engine.RetryOpts{
		Actor: actor(r), Reason: req.Reason, InputPatch: req.InputPatch, Input: req.Input,
	})
	h.audit(r, "retry", req.Reason, err, slog.String("saga_id", r.PathValue("id")))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.get(w, r)
}

// RetryStep retries the failed saga's halted step (see engine.Engine.RetryStep) and returns it.
func (c *Client) RetryStep(ctx context.Context, id string, req RetryRequest) (*engine.Instance, error) {
	var inst engine.Instance
	if err := c.do(ctx, http.MethodPost, "/v1/sagas/"+url.PathEscape(id)+"/retry", req, &inst); err != nil {
		return nil, err
	}
	return &inst, nil
}
