package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/engine"
	"github.com/sagaflow/sagaflow/saga"
)

// Engine is what the API needs of the orchestrator; *engine.Engine has it.
type Engine interface {
	Start(ctx context.Context, definition, businessKey string, input json.RawMessage, opts engine.StartOptions) (string, error)
	Get(ctx context.Context, id string) (*engine.Instance, error)
	GetByKey(ctx context.Context, definition, businessKey string) (*engine.Instance, error)
	Summaries(ctx context.Context, f engine.Filter) ([]engine.Summary, error)
	CountByStatus(ctx context.Context, f engine.Filter) (engine.StatusCounts, error)
	HistoryPage(ctx context.Context, id string, p engine.HistoryParams) ([]engine.HistoryEntry, error)
	Cancel(ctx context.Context, id, actor, reason string) error
	Redrive(ctx context.Context, id, actor, reason string) error
	Resolve(ctx context.Context, id, actor, reason string) error
	RetryStep(ctx context.Context, id string, opts *engine.RetryOpts) error
	DefinitionVersions(ctx context.Context) ([]engine.DefinitionVersion, error)
}

// ActorHeader names whom a caller acts for. With authentication the history records the token's
// name and this only as "on behalf of"; without, it records this as given.
const ActorHeader = "X-Sagaflow-Actor"

// maxBody bounds request bodies: a start input is a saga's data, not a file upload.
const maxBody = 1 << 20

// StartRequest is the body of POST /v1/sagas.
type StartRequest struct {
	Definition     string          `json:"definition"`
	Version        int             `json:"version,omitempty"`
	BusinessKey    string          `json:"business_key,omitempty"`
	Input          json.RawMessage `json:"input,omitempty"`
	IdempotencyKey string          `json:"idempotency_key,omitempty"`
}

// StartResponse is the answer to POST /v1/sagas.
type StartResponse struct {
	ID string `json:"id"`
}

// ListResponse is the answer to GET /v1/sagas: a page of summaries (no input, no step outputs:
// GET /v1/sagas/{id} has them), newest first. Next, when set, is the before cursor of the next page.
type ListResponse struct {
	Sagas []engine.Summary `json:"sagas"`
	Next  string           `json:"next,omitempty"`
}

// CountsResponse is the answer to GET /v1/sagas/counts: how many sagas the filters select in each
// status, and in all.
type CountsResponse struct {
	Counts engine.VersionCounts `json:"counts"`
	Total  int64                `json:"total"`
}

// List page sizes: the default and the largest a request may ask for.
const (
	DefaultListLimit = 100
	MaxListLimit     = 1000
)

// HistoryResponse is the answer to GET /v1/sagas/{id}/history?after=<seq>&limit=<n>: a page of
// the timeline, and Next, the after= of the next page, set when the page is full (more may follow).
type HistoryResponse struct {
	History []engine.HistoryEntry `json:"history"`
	Next    string                `json:"next,omitempty"`
}

// History page sizes: the default and the largest a request may ask for.
const (
	DefaultHistoryLimit = 500
	MaxHistoryLimit     = 5000
)

// OperationRequest is the body of cancel, redrive and resolve.
type OperationRequest struct {
	Reason string `json:"reason,omitempty"`
}

// Error is the body of every error answer.
type Error struct {
	Message string `json:"error"`
	// Code is stable for scripts: bad_request, too_large, not_found, conflict, internal.
	Code string `json:"code"`
}

// NewHandler returns the API's handler. defs lists the definitions (nil: none); logger may be nil.
// It serves /healthz (HealthHandler) but not /readyz, whose checks depend on what the process
// runs: mount ReadyHandler beside it (internal/server does).
func NewHandler(e Engine, defs *definitions.Registry, logger *slog.Logger) http.Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	h := &handler{e: e, defs: defs, log: logger.With("component", "http")}
	mux := http.NewServeMux()
	for _, rt := range h.routes() {
		mux.Handle(rt.pattern, rt.handler)
	}
	return jsonMisses(mux)
}

// route is one endpoint: its ServeMux pattern ("GET /v1/sagas/{id}") and its handler. The route
// tables are the only place routes are registered, so TestOpenAPIRoutes can hold them to the
// OpenAPI document.
type route struct {
	pattern string
	handler http.Handler
}

// routes are NewHandler's endpoints.
func (h *handler) routes() []route {
	return []route{
		{"POST /v1/sagas", http.HandlerFunc(h.start)},
		{"GET /v1/sagas", http.HandlerFunc(h.list)},
		{"GET /v1/sagas/counts", http.HandlerFunc(h.counts)},
		{"GET /v1/sagas/{id}", http.HandlerFunc(h.get)},
		{"GET /v1/sagas/{id}/history", http.HandlerFunc(h.history)},
		{"GET /v1/definitions/{name}/sagas/{key}", http.HandlerFunc(h.getByKey)},
		{"POST /v1/sagas/{id}/cancel", h.operation("cancel", h.e.Cancel)},
		{"POST /v1/sagas/{id}/redrive", h.operation("redrive", h.e.Redrive)},
		{"POST /v1/sagas/{id}/resolve", h.operation("resolve", h.e.Resolve)},
		{"POST /v1/sagas/{id}/retry", http.HandlerFunc(h.retry)},
		{"GET /v1/definitions", http.HandlerFunc(h.definitions)},
		{"GET /healthz", HealthHandler()},
		{"GET /openapi.json", http.HandlerFunc(openAPI)},
	}
}

// jsonMisses answers a request no route takes (an unknown path: 404; a known path with another
// method: 405, with Allow) with the API's JSON error instead of ServeMux's plain text.
func jsonMisses(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		probe := &statusProbe{header: http.Header{}} // ServeMux decides between 404 and 405 and sets Allow
		mux.ServeHTTP(probe, r)
		if allow := probe.Header().Get("Allow"); allow != "" {
			w.Header().Set("Allow", allow)
		}
		code := "not_found"
		msg := fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path)
		if probe.Code == http.StatusMethodNotAllowed {
			code, msg = "method_not_allowed", fmt.Sprintf("%s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, probe.Header().Get("Allow"))
		}
		writeJSON(w, probe.Code, Error{Message: msg, Code: code})
	})
}

// statusProbe keeps the status and headers ServeMux gives a request no route takes, and drops its
// plain-text body.
type statusProbe struct {
	header http.Header
	Code   int
}

func (p *statusProbe) Header() http.Header         { return p.header }
func (p *statusProbe) Write(b []byte) (int, error) { return len(b), nil }
func (p *statusProbe) WriteHeader(code int)        { p.Code = code }

type handler struct {
	e    Engine
	defs *definitions.Registry
	log  *slog.Logger
}

func (h *handler) start(w http.ResponseWriter, r *http.Request) {
	var req StartRequest
	if !h.decode(w, r, &req) {
		return
	}
	if req.Definition == "" {
		h.fail(w, r, badRequest("field definition is required"))
		return
	}
	id, err := h.e.Start(r.Context(), req.Definition, req.BusinessKey, req.Input, engine.StartOptions{
		Version: req.Version, IdempotencyKey: req.IdempotencyKey, Actor: actor(r),
	})
	h.audit(r, "start", "", err, slog.String("saga_id", id), slog.String("definition", req.Definition))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, StartResponse{ID: id})
}

func (h *handler) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f, err := selection(q)
	if err == nil {
		err = paging(q, &f)
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	sagas, err := h.e.Summaries(r.Context(), f)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	resp := ListResponse{Sagas: sagas}
	if resp.Sagas == nil {
		resp.Sagas = []engine.Summary{}
	}
	if len(sagas) == f.Limit {
		resp.Next = sagas[len(sagas)-1].ID
	}
	writeJSON(w, http.StatusOK, resp)
}

func (h *handler) counts(w http.ResponseWriter, r *http.Request) {
	f, err := selection(r.URL.Query())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	counts, err := h.e.CountByStatus(r.Context(), f)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	var resp CountsResponse
	for status, n := range counts {
		switch status {
		case saga.StatusRunning:
			resp.Counts.Running = n
		case saga.StatusCompensating:
			resp.Counts.Compensating = n
		case saga.StatusCompleted:
			resp.Counts.Completed = n
		case saga.StatusCompensated:
			resp.Counts.Compensated = n
		case saga.StatusFailed:
			resp.Counts.Failed = n
		}
		resp.Total += n
	}
	writeJSON(w, http.StatusOK, resp)
}

// selection reads the query parameters that select sagas, shared by the list and the counts:
// definition, version, business_key, needs_attention, started_after and started_before.
func selection(q url.Values) (engine.Filter, error) {
	f := engine.Filter{Definition: q.Get("definition"), BusinessKey: q.Get("business_key")}
	if err := engine.CheckBusinessKey(f.BusinessKey); err != nil {
		return f, fmt.Errorf("query parameter business_key: %w", err)
	}
	if s := q.Get("version"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return f, badRequest(fmt.Sprintf("query parameter version=%q: want a definition version (an integer >= 1)", s))
		}
		f.Version = n
	}
	if s := q.Get("needs_attention"); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return f, badRequest(fmt.Sprintf("query parameter needs_attention=%q: want true or false", s))
		}
		f.NeedsAttention = b
	}
	var err error
	if f.StartedAfter, err = parseTime(q, "started_after"); err != nil {
		return f, err
	}
	if f.StartedBefore, err = parseTime(q, "started_before"); err != nil {
		return f, err
	}
	if !f.StartedAfter.IsZero() && !f.StartedBefore.IsZero() && !f.StartedAfter.Before(f.StartedBefore) {
		return f, badRequest(fmt.Sprintf("query parameters started_after=%q and started_before=%q: started_after must be earlier", q.Get("started_after"), q.Get("started_before")))
	}
	return f, nil
}

// paging reads the list's own query parameters into f: status, limit and the before cursor.
func paging(q url.Values, f *engine.Filter) error {
	f.Status, f.Before, f.Limit = q.Get("status"), q.Get("before"), DefaultListLimit
	if f.Status != "" && !validStatus(f.Status) {
		return badRequest(fmt.Sprintf("query parameter status=%q: want running, compensating, completed, compensated or failed", f.Status))
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxListLimit {
			return badRequest(fmt.Sprintf("query parameter limit=%q: want an integer in 1..%d", s, MaxListLimit))
		}
		f.Limit = n
	}
	return nil
}

// parseTime reads the RFC 3339 time of query parameter name; absent is the zero time.
func parseTime(q url.Values, name string) (time.Time, error) {
	s := q.Get(name)
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, badRequest(fmt.Sprintf("query parameter %s=%q: want an RFC 3339 time such as 2026-11-29T08:00:00Z", name, s))
	}
	return t, nil
}

func validStatus(s string) bool {
	switch saga.Status(s) {
	case saga.StatusRunning, saga.StatusCompensating, saga.StatusCompleted, saga.StatusCompensated, saga.StatusFailed:
		return true
	}
	return false
}

func (h *handler) get(w http.ResponseWriter, r *http.Request) {
	inst, err := h.e.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, inst)
}

func (h *handler) getByKey(w http.ResponseWriter, r *http.Request) {
	if err := engine.CheckBusinessKey(r.PathValue("key")); err != nil {
		h.fail(w, r, fmt.Errorf("path parameter key: %w", err))
		return
	}
	inst, err := h.e.GetByKey(r.Context(), r.PathValue("name"), r.PathValue("key"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, inst)
}

func (h *handler) history(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p := engine.HistoryParams{Limit: DefaultHistoryLimit}
	if s := q.Get("after"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			h.fail(w, r, badRequest(fmt.Sprintf("query parameter after=%q: want a history sequence number (>= 0)", s)))
			return
		}
		p.After = n
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxHistoryLimit {
			h.fail(w, r, badRequest(fmt.Sprintf("query parameter limit=%q: want an integer in 1..%d", s, MaxHistoryLimit)))
			return
		}
		p.Limit = n
	}
	entries, err := h.e.HistoryPage(r.Context(), r.PathValue("id"), p)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	resp := HistoryResponse{History: entries}
	if resp.History == nil {
		resp.History = []engine.HistoryEntry{}
	}
	if len(entries) == p.Limit {
		resp.Next = strconv.FormatInt(entries[len(entries)-1].Seq, 10)
	}
	writeJSON(w, http.StatusOK, resp)
}

func (h *handler) operation(action string, op func(ctx context.Context, id, actor, reason string) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req OperationRequest
		if r.ContentLength != 0 && !h.decode(w, r, &req) {
			return
		}
		id := r.PathValue("id")
		err := op(r.Context(), id, actor(r), req.Reason)
		h.audit(r, action, req.Reason, err, slog.String("saga_id", id))
		if err != nil {
			h.fail(w, r, err)
			return
		}
		h.get(w, r)
	}
}

// decode reads a JSON body strictly (unknown fields are errors) and answers 400 when it cannot.
func (h *handler) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if tooLarge, ok := errors.AsType[*http.MaxBytesError](err); ok {
			h.fail(w, r, &engine.LimitError{What: "request body", Size: int(tooLarge.Limit) + 1, Limit: int(tooLarge.Limit), Setting: "the API's request limit"})
			return false
		}
		h.fail(w, r, badRequest("request body: "+err.Error()))
		return false
	}
	return true
}

type badRequest string

func (b badRequest) Error() string { return string(b) }

// fail maps an error to its status: the engine's and the state machine's sentinels say whether the
// caller asked for something wrong (4xx, with the error's text) or the server failed (500, logged;
// the answer says only that, so no database or driver text ever reaches a client).
func (h *handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, code := http.StatusInternalServerError, "internal"
	var br badRequest
	switch {
	case errors.Is(err, engine.ErrTooLarge):
		status, code = http.StatusRequestEntityTooLarge, "too_large"
	case errors.As(err, &br), errors.Is(err, engine.ErrInvalidInput):
		status, code = http.StatusBadRequest, "bad_request"
	case errors.Is(err, engine.ErrNotFound), errors.Is(err, definitions.ErrNotFound):
		status, code = http.StatusNotFound, "not_found"
	case errors.Is(err, saga.ErrFinished), errors.Is(err, saga.ErrCompensating), errors.Is(err, saga.ErrNotFailed), errors.Is(err, saga.ErrNotRetryable),
		errors.Is(err, saga.ErrNotCancellable), errors.Is(err, engine.ErrNoAttention), errors.Is(err, engine.ErrConflict):
		status, code = http.StatusConflict, "conflict"
	}
	msg := err.Error()
	if status == http.StatusInternalServerError {
		h.log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		msg = "internal error: the request failed on the server; its log has the cause"
	}
	writeJSON(w, status, Error{Message: msg, Code: code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client went away; nothing to do
}
