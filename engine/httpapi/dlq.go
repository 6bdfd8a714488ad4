package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/sagaflow/sagaflow/internal/dlq"
)

// The dead-letter API: /v1/dlq serves the messages of SAGA_DLQ (internal/dlq) to operators.

// DLQ is what the dead-letter routes need; *dlq.Queue has it.
type DLQ interface {
	List(ctx context.Context, p dlq.ListParams) (dlq.Page, error)
	Get(ctx context.Context, seq uint64) (*dlq.Message, error)
	Match(ctx context.Context, p dlq.ListParams, most int) ([]uint64, bool, error)
	Replay(ctx context.Context, seqs []uint64, opts dlq.ChangeOpts) ([]dlq.Changed, error)
	Purge(ctx context.Context, seqs []uint64, opts dlq.ChangeOpts) ([]dlq.Changed, error)
}

// DLQMessage is a dead-lettered message as the API shows it.
type DLQMessage = dlq.Message

// DLQChanged is a message a replay or purge handled (or would, in a dry run).
type DLQChanged = dlq.Changed

// DLQFilter selects dead letters. Since and OlderThan are a duration before now ("24h") or an RFC
// 3339 time.
type DLQFilter struct {
	// Subject matches the original subject, NATS wildcards allowed ("saga.cmd.payments.>").
	Subject string `json:"subject,omitempty"`
	// Reason matches reasons containing it, ignoring case.
	Reason string `json:"reason,omitempty"`
	SagaID string `json:"saga_id,omitempty"`
	// Since: dead-lettered at or after it. OlderThan: dead-lettered before it.
	Since     string `json:"since,omitempty"`
	OlderThan string `json:"older_than,omitempty"`
}

func (f DLQFilter) empty() bool { return f == DLQFilter{} }

// params turns f into the queue's filter, with now the reference of relative ages.
func (f DLQFilter) params(now time.Time) (dlq.ListParams, error) {
	p := dlq.ListParams{Subject: f.Subject, Reason: f.Reason, SagaID: f.SagaID}
	var err error
	if p.Since, err = parseAge("since", f.Since, now); err != nil {
		return p, err
	}
	if p.Until, err = parseAge("older_than", f.OlderThan, now); err != nil {
		return p, err
	}
	return p, nil
}

// parseAge reads a duration before now or an RFC 3339 time; "" is the zero time.
func parseAge(name, s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d <= 0 {
			return time.Time{}, badRequest(fmt.Sprintf("%s=%q: want a positive duration", name, s))
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, badRequest(fmt.Sprintf("%s=%q: want a duration (24h, 90m) or an RFC 3339 time", name, s))
	}
	return t, nil
}

// DLQListResponse is the answer to GET /v1/dlq, newest first. Next, when set, is the before cursor
// of the next, older page.
type DLQListResponse struct {
	Messages []DLQMessage `json:"messages"`
	Next     uint64       `json:"next,omitempty"`
}

// DLQChangeRequest is the body of POST /v1/dlq/replay and /v1/dlq/purge: either Seqs or Filter
// (with at least one criterion) selects the messages; Reason is required.
type DLQChangeRequest struct {
	Seqs   []uint64   `json:"seqs,omitempty"`
	Filter *DLQFilter `json:"filter,omitempty"`
	Reason string     `json:"reason"`
	DryRun bool       `json:"dry_run,omitempty"`
}

// DLQChangeResponse is the answer to a replay or purge: the messages handled, oldest first (in a
// dry run, those that would be). More says a filter matched more than MaxDLQChange messages: call
// again for the rest.
type DLQChangeResponse struct {
	DryRun   bool         `json:"dry_run"`
	Messages []DLQChanged `json:"messages"`
	More     bool         `json:"more,omitempty"`
}

// MaxDLQChange is the most messages one replay or purge by filter handles.
const MaxDLQChange = 1000

// DLQHandler returns the handler of the dead-letter routes over q (logger may be nil):
//
//	GET  /v1/dlq?subject=&reason=&saga_id=&since=&older_than=&before=&limit=   → DLQListResponse
//	GET  /v1/dlq/{seq}      → the message whole, with headers
//	POST /v1/dlq/replay     DLQChangeRequest → DLQChangeResponse
//	POST /v1/dlq/purge      DLQChangeRequest → DLQChangeResponse
//
// The node (internal/server) mounts it beside NewHandler's routes, as it does ReadyHandler, since
// it needs the bus. Replays and purges record the request's actor (see NewHandler) in their audit
// log lines and the replayed messages.
func DLQHandler(q DLQ, logger *slog.Logger) http.Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	h := &dlqHandler{q: q, handler: handler{log: logger.With("component", "http")}}
	mux := http.NewServeMux()
	for _, rt := range h.routes() {
		mux.Handle(rt.pattern, rt.handler)
	}
	return jsonMisses(mux)
}

// routes are DLQHandler's endpoints.
func (h *dlqHandler) routes() []route {
	return []route{
		{"GET /v1/dlq", http.HandlerFunc(h.list)},
		{"GET /v1/dlq/{seq}", http.HandlerFunc(h.get)},
		{"POST /v1/dlq/replay", h.change("dlq_replay", h.q.Replay)},
		{"POST /v1/dlq/purge", h.change("dlq_purge", h.q.Purge)},
	}
}

type dlqHandler struct {
	handler
	q DLQ
}

func (h *dlqHandler) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := DLQFilter{Subject: q.Get("subject"), Reason: q.Get("reason"), SagaID: q.Get("saga_id"),
		Since: q.Get("since"), OlderThan: q.Get("older_than")}
	p, err := f.params(time.Now())
	if err != nil {
		h.failDLQ(w, r, err)
		return
	}
	if s := q.Get("before"); s != "" {
		if p.Before, err = strconv.ParseUint(s, 10, 64); err != nil || p.Before == 0 {
			h.failDLQ(w, r, badRequest(fmt.Sprintf("query parameter before=%q: want a stream sequence (a positive integer)", s)))
			return
		}
	}
	if s := q.Get("limit"); s != "" {
		if p.Limit, err = strconv.Atoi(s); err != nil || p.Limit < 1 || p.Limit > dlq.MaxLimit {
			h.failDLQ(w, r, badRequest(fmt.Sprintf("query parameter limit=%q: want an integer in 1..%d", s, dlq.MaxLimit)))
			return
		}
	}
	page, err := h.q.List(r.Context(), p)
	if err != nil {
		h.failDLQ(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, DLQListResponse{Messages: page.Messages, Next: page.Next})
}

func (h *dlqHandler) get(w http.ResponseWriter, r *http.Request) {
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil || seq == 0 {
		h.failDLQ(w, r, badRequest(fmt.Sprintf("message %q: want a stream sequence (a positive integer)", r.PathValue("seq"))))
		return
	}
	m, err := h.q.Get(r.Context(), seq)
	if err != nil {
		h.failDLQ(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, m)
}

func (h *dlqHandler) change(action string, op func(context.Context, []uint64, dlq.ChangeOpts) ([]dlq.Changed, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req DLQChangeRequest
		if !h.decode(w, r, &req) {
			return
		}
		switch {
		case len(req.Seqs) > 0 && req.Filter != nil:
			h.failDLQ(w, r, badRequest("give seqs or filter, not both"))
			return
		case len(req.Seqs) == 0 && (req.Filter == nil || req.Filter.empty()):
			h.failDLQ(w, r, badRequest("give seqs, or a filter with at least one criterion"))
			return
		case len(req.Seqs) > MaxDLQChange:
			h.failDLQ(w, r, badRequest(fmt.Sprintf("%d seqs: at most %d at once", len(req.Seqs), MaxDLQChange)))
			return
		}
		opts := dlq.ChangeOpts{Actor: actor(r), Reason: req.Reason, DryRun: req.DryRun}
		if opts.Reason == "" {
			h.failDLQ(w, r, dlq.ErrReasonRequired)
			return
		}
		seqs, more := req.Seqs, false
		if req.Filter != nil {
			p, err := req.Filter.params(time.Now())
			if err != nil {
				h.failDLQ(w, r, err)
				return
			}
			if seqs, more, err = h.q.Match(r.Context(), p, MaxDLQChange); err != nil {
				h.failDLQ(w, r, err)
				return
			}
			if len(seqs) == 0 {
				writeJSON(w, http.StatusOK, DLQChangeResponse{DryRun: req.DryRun, Messages: []DLQChanged{}})
				return
			}
		}
		done, err := op(r.Context(), seqs, opts)
		h.audit(r, action, req.Reason, err, slog.Any("seqs", seqs), slog.Bool("dry_run", req.DryRun))
		if err != nil {
			h.failDLQ(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, DLQChangeResponse{DryRun: req.DryRun, Messages: done, More: more})
	}
}

// failDLQ maps the queue's sentinels to statuses; everything else goes to fail.
func (h *dlqHandler) failDLQ(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, dlq.ErrNotFound):
		writeJSON(w, http.StatusNotFound, Error{Message: err.Error(), Code: "not_found"})
	case errors.Is(err, dlq.ErrReasonRequired), errors.Is(err, dlq.ErrInvalidParams):
		writeJSON(w, http.StatusBadRequest, Error{Message: err.Error(), Code: "bad_request"})
	case errors.Is(err, dlq.ErrNotReplayable):
		writeJSON(w, http.StatusConflict, Error{Message: err.Error(), Code: "conflict"})
	default:
		h.fail(w, r, err)
	}
}

// DLQList returns a page of dead letters matching f, newest first; before is the cursor (0: the
// newest), limit the page size (0: the server's default).
func (c *Client) DLQList(ctx context.Context, f DLQFilter, before uint64, limit int) (DLQListResponse, error) {
	q := url.Values{}
	for k, v := range map[string]string{"subject": f.Subject, "reason": f.Reason, "saga_id": f.SagaID, "since": f.Since, "older_than": f.OlderThan} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if before > 0 {
		q.Set("before", strconv.FormatUint(before, 10))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var resp DLQListResponse
	err := c.do(ctx, http.MethodGet, "/v1/dlq?"+q.Encode(), nil, &resp)
	return resp, err
}

// DLQGet returns one dead letter whole, with its headers.
func (c *Client) DLQGet(ctx context.Context, seq uint64) (*DLQMessage, error) {
	var m DLQMessage
	if err := c.do(ctx, http.MethodGet, "/v1/dlq/"+strconv.FormatUint(seq, 10), nil, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// DLQReplay republishes dead letters to their original subjects and removes them from SAGA_DLQ.
func (c *Client) DLQReplay(ctx context.Context, req DLQChangeRequest) (DLQChangeResponse, error) {
	var resp DLQChangeResponse
	err := c.do(ctx, http.MethodPost, "/v1/dlq/replay", req, &resp)
	return resp, err
}

// DLQPurge deletes dead letters from SAGA_DLQ.
func (c *Client) DLQPurge(ctx context.Context, req DLQChangeRequest) (DLQChangeResponse, error) {
	var resp DLQChangeResponse
	err := c.do(ctx, http.MethodPost, "/v1/dlq/purge", req, &resp)
	return resp, err
}
