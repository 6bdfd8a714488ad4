package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/engine"
	"github.com/sagaflow/sagaflow/engine/httpapi"
	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/natstest"
	"github.com/sagaflow/sagaflow/internal/pgtest"
	"github.com/sagaflow/sagaflow/internal/protocol"
	"github.com/sagaflow/sagaflow/internal/server"
	"github.com/sagaflow/sagaflow/internal/telemetry"
	"github.com/sagaflow/sagaflow/saga"
)

// loadOpenAPI loads the document the API serves and validates it as OpenAPI 3.1.
func loadOpenAPI(t *testing.T) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(httpapi.OpenAPI())
	require.NoError(t, err)
	require.True(t, doc.IsOpenAPI31OrLater(), "version %s", doc.OpenAPI)
	require.NoError(t, doc.Validate(t.Context()))
	return doc
}

// TestOpenAPIRoutes: the document describes exactly the routes the handlers register, so a route
// added without its documentation (or documentation of a route that is gone) fails here.
func TestOpenAPIRoutes(t *testing.T) {
	t.Parallel()
	doc := loadOpenAPI(t)
	var documented []string
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			documented = append(documented, method+" "+path)
			require.NotEmpty(t, op.OperationID, "%s %s", method, path)
			if strings.HasPrefix(path, "/v1/") {
				require.NotNil(t, op.Responses.Status(http.StatusInternalServerError), "%s %s documents no 500", method, path)
			}
		}
	}
	// internal/server mounts /readyz (httpapi.ReadyHandler) and /metrics beside the handlers.
	registered := append(httpapi.RoutePatterns(), "GET /readyz", "GET /metrics")
	sort.Strings(documented)
	sort.Strings(registered)
	require.Equal(t, registered, documented)
}

// conformance is an http.RoundTripper that checks every request and its answer against the
// OpenAPI document: the request (unless the test sent a malformed one on purpose, answered 400 or
// 413) and the response's status, headers and body. A request no route takes must be answered
// 404, or 405 with Allow, with the Error schema. It records the statuses seen per operation.
type conformance struct {
	t      *testing.T
	doc    *openapi3.T
	router routers.Router
	next   http.RoundTripper

	mu   sync.Mutex
	seen map[string][]int // operationId (or "unrouted") → statuses
}

func newConformance(t *testing.T, doc *openapi3.T, base string) *conformance {
	t.Helper()
	doc.Servers = openapi3.Servers{{URL: base}}
	router, err := legacy.NewRouter(doc)
	require.NoError(t, err)
	return &conformance{t: t, doc: doc, router: router, next: http.DefaultTransport, seen: map[string][]int{}}
}

func (c *conformance) RoundTrip(req *http.Request) (*http.Response, error) {
	var reqBody []byte
	if req.Body != nil {
		var err error
		if reqBody, err = io.ReadAll(req.Body); err != nil {
			return nil, err
		}
		_ = req.Body.Close()
		req.Body = io.NopCloser(bytes.NewReader(reqBody))
	}
	resp, err := c.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	req.Body = io.NopCloser(bytes.NewReader(reqBody))
	if err := c.check(req, resp, body); err != nil {
		c.t.Errorf("%s %s → %d: %v\nbody: %.500s", req.Method, req.URL.RequestURI(), resp.StatusCode, err, body)
	}
	return resp, nil
}

func (c *conformance) check(req *http.Request, resp *http.Response, body []byte) error {
	ctx := context.WithoutCancel(req.Context())
	route, params, err := c.router.FindRoute(req)
	if err != nil {
		c.record("unrouted", resp.StatusCode)
		switch {
		case resp.StatusCode == http.StatusMethodNotAllowed && resp.Header.Get("Allow") == "":
			return fmt.Errorf("405 without Allow")
		case resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusMethodNotAllowed:
			return fmt.Errorf("no route in the document (%w), but not answered 404 or 405", err)
		}
		var v any
		if err := json.Unmarshal(body, &v); err != nil {
			return fmt.Errorf("error body: %w", err)
		}
		return c.doc.Components.Schemas["Error"].Value.VisitJSON(v, openapi3.EnableJSONSchema2020())
	}
	c.record(route.Operation.OperationID, resp.StatusCode)
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
	if resp.StatusCode != http.StatusBadRequest && resp.StatusCode != http.StatusRequestEntityTooLarge {
		if err := openapi3filter.ValidateRequest(ctx, in); err != nil {
			return fmt.Errorf("request: %w", err)
		}
	}
	if resp.StatusCode == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
		return fmt.Errorf("401 without WWW-Authenticate")
	}
	return openapi3filter.ValidateResponse(ctx, &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header, Body: io.NopCloser(bytes.NewReader(body)),
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	})
}

func (c *conformance) record(op string, status int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seen[op] = append(c.seen[op], status)
}

// call sends a request with token (empty: none) through the checker and returns the status.
func (c *conformance) call(t *testing.T, method, url, token, body string) int {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, rd)
	require.NoError(t, err)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Transport: c}).Do(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	return resp.StatusCode
}

// TestOpenAPI runs a real node (PostgreSQL, in-process JetStream, the orchestrator, bearer tokens)
// and exercises every route through the Go client and raw requests, success and every error
// class, checking each request and answer against the served document.
func TestOpenAPI(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	doc := loadOpenAPI(t)
	db := pgtest.New(t)
	require.NoError(t, engine.Migrate(ctx, db))
	reg := definitions.NewRegistry()
	transfer, err := definitions.New("transfer", 1).
		Step("debit", "bank", "Debit").Compensation("Credit").
		Step("notify", "mail", "Send").Build()
	require.NoError(t, err)
	// "stuck" fails at once: its only step cannot be undone, gets one attempt and no one answers.
	stuck, err := definitions.New("stuck", 1).Step("charge", "pay", "Charge").Timeout(50 * time.Millisecond).
		Retry(saga.RetryPolicy{MaxAttempts: 1, Backoff: time.Millisecond, MaxBackoff: time.Millisecond}).Build()
	require.NoError(t, err)
	require.NoError(t, reg.Register(transfer))
	require.NoError(t, reg.Register(stuck))
	viewer, operator := httpapi.NewToken(), httpapi.NewToken()
	auth, err := httpapi.NewAuth([]httpapi.Credential{
		{Name: "watcher", Role: httpapi.RoleViewer, SHA256: httpapi.HashToken(viewer)},
		{Name: "ops", Role: httpapi.RoleOperator, SHA256: httpapi.HashToken(operator)},
	})
	require.NoError(t, err)
	ns := natstest.New(t, nil)
	node, err := server.New(ctx, server.Config{DB: db, NATS: ns.Connect(t), Definitions: reg, Orchestrator: true,
		HTTPAddr: "127.0.0.1:0", Auth: auth, MetricsHandler: telemetry.MetricsHandler(prometheus.NewRegistry()),
		Engine: engine.Config{TimerInterval: 50 * time.Millisecond}})
	require.NoError(t, err)
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- node.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		require.NoError(t, <-done)
	})
	base := "http://" + node.Addr()
	check := newConformance(t, doc, base)
	hc := &http.Client{Transport: check}
	c := httpapi.NewClient(base, "tester", hc).WithToken(operator)
	cv := httpapi.NewClient(base, "", hc).WithToken(viewer)

	t.Run("Sagas", func(t *testing.T) {
		id, err := c.Start(ctx, httpapi.StartRequest{Definition: "transfer", BusinessKey: "k-1", Input: json.RawMessage(`{"amount":5}`)})
		require.NoError(t, err)
		_, err = c.Start(ctx, httpapi.StartRequest{Definition: "transfer", Version: 1, BusinessKey: "k-2", IdempotencyKey: "i-2"})
		require.NoError(t, err)
		page, err := cv.ListSagas(ctx, engine.Filter{Definition: "transfer", Version: 1, StartedAfter: time.Now().Add(-time.Hour),
			StartedBefore: time.Now().Add(time.Hour), Status: "running", Limit: 1})
		require.NoError(t, err)
		require.Len(t, page.Sagas, 1)
		require.NotEmpty(t, page.Next)
		page, err = cv.ListSagas(ctx, engine.Filter{Before: page.Next, NeedsAttention: false})
		require.NoError(t, err)
		require.Len(t, page.Sagas, 1)
		counts, err := cv.CountSagas(ctx, engine.Filter{Definition: "transfer", BusinessKey: "k-1", NeedsAttention: false})
		require.NoError(t, err)
		require.Equal(t, int64(1), counts.Total)
		_, err = cv.Get(ctx, id)
		require.NoError(t, err)
		_, err = cv.GetByKey(ctx, "transfer", "k-1")
		require.NoError(t, err)
		hist, err := cv.HistoryPage(ctx, id, engine.HistoryParams{Limit: 1})
		require.NoError(t, err)
		require.NotEmpty(t, hist.Next)
		_, err = cv.History(ctx, id)
		require.NoError(t, err)
		_, err = cv.Definitions(ctx)
		require.NoError(t, err)

		_, err = db.ExecContext(ctx, db.Rebind(`UPDATE sagaflow_instances SET attention = ? WHERE id = ?`), "late effect", id)
		require.NoError(t, err)
		_, err = c.Resolve(ctx, id, "reconciled")
		require.NoError(t, err)
		_, err = c.Resolve(ctx, id, "again")
		requireStatus(t, err, http.StatusConflict)
		_, err = c.Cancel(ctx, id, "customer asked")
		require.NoError(t, err)

		// A failed saga: redriven, failed again, its step retried with a corrected input.
		sid, err := c.Start(ctx, httpapi.StartRequest{Definition: "stuck", Input: json.RawMessage(`{"card":"x"}`)})
		require.NoError(t, err)
		waitStatus(t, cv, sid, saga.StatusFailed)
		_, err = c.Cancel(ctx, sid, "")
		requireStatus(t, err, http.StatusConflict)
		_, err = c.Redrive(ctx, sid, "card fixed")
		require.NoError(t, err)
		waitStatus(t, cv, sid, saga.StatusFailed)
		_, err = c.RetryStep(ctx, sid, httpapi.RetryRequest{Reason: "new card", InputPatch: json.RawMessage(`{"card":"y"}`)})
		require.NoError(t, err)
	})

	t.Run("DeadLetters", func(t *testing.T) {
		js := ns.JetStream(t)
		first := deadLetterAt(t, js, "saga.cmd.pay.Charge", "s-1", strings.Repeat("p", 300))
		deadLetterAt(t, js, "saga.cmd.pay.Charge", "s-2", `{}`)
		deadLetterAt(t, js, "saga.cmd.pay.Charge", "s-3", `{}`)
		page, err := cv.DLQList(ctx, httpapi.DLQFilter{Subject: "saga.cmd.pay.>", Since: "1h"}, 0, 1)
		require.NoError(t, err)
		require.NotZero(t, page.Next)
		page, err = cv.DLQList(ctx, httpapi.DLQFilter{Reason: "declined"}, page.Next, 0)
		require.NoError(t, err)
		require.Len(t, page.Messages, 2)
		require.True(t, page.Messages[1].PayloadTruncated)
		m, err := cv.DLQGet(ctx, first)
		require.NoError(t, err)
		require.NotEmpty(t, m.Headers)
		_, err = c.DLQReplay(ctx, httpapi.DLQChangeRequest{Seqs: []uint64{first}, Reason: "fixed", DryRun: true})
		require.NoError(t, err)
		replayed, err := c.DLQReplay(ctx, httpapi.DLQChangeRequest{Seqs: []uint64{first}, Reason: "fixed"})
		require.NoError(t, err)
		require.Len(t, replayed.Messages, 1)
		purged, err := c.DLQPurge(ctx, httpapi.DLQChangeRequest{Filter: &httpapi.DLQFilter{SagaID: "s-2"}, Reason: "obsolete"})
		require.NoError(t, err)
		require.Len(t, purged.Messages, 1)
		_, err = c.DLQGet(ctx, first)
		requireStatus(t, err, http.StatusNotFound)
		_, err = c.DLQReplay(ctx, httpapi.DLQChangeRequest{Seqs: []uint64{first}, Reason: "gone"})
		requireStatus(t, err, http.StatusNotFound)
	})

	t.Run("Probes", func(t *testing.T) {
		require.Equal(t, http.StatusOK, check.call(t, http.MethodGet, base+"/healthz", "", ""))
		require.Equal(t, http.StatusOK, check.call(t, http.MethodGet, base+"/readyz", "", ""))
		require.Equal(t, http.StatusOK, check.call(t, http.MethodGet, base+"/metrics", "", ""))
		resp, err := hc.Get(base + "/openapi.json") //nolint:noctx // a test request
		require.NoError(t, err)
		served, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		_ = resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, "served without a token")
		require.Equal(t, httpapi.OpenAPI(), served)
	})

	t.Run("Errors", func(t *testing.T) {
		for _, tt := range []struct {
			name, method, path, token, body string
			status                          int
		}{
			{"BadLimit", http.MethodGet, "/v1/sagas?limit=0", viewer, "", http.StatusBadRequest},
			{"BadStartedAfter", http.MethodGet, "/v1/sagas/counts?started_after=today", viewer, "", http.StatusBadRequest},
			{"BadHistoryCursor", http.MethodGet, "/v1/sagas/x/history?after=-1", viewer, "", http.StatusBadRequest},
			{"BadBody", http.MethodPost, "/v1/sagas", operator, `{"bogus":1}`, http.StatusBadRequest},
			{"BadSeq", http.MethodGet, "/v1/dlq/abc", viewer, "", http.StatusBadRequest},
			{"BadDLQChange", http.MethodPost, "/v1/dlq/purge", operator, `{"reason":"r"}`, http.StatusBadRequest},
			{"NoToken", http.MethodGet, "/v1/sagas", "", "", http.StatusUnauthorized},
			{"UnknownToken", http.MethodGet, "/v1/dlq", "sft_nope", "", http.StatusUnauthorized},
			{"ViewerStarts", http.MethodPost, "/v1/sagas", viewer, `{"definition":"transfer"}`, http.StatusForbidden},
			{"ViewerPurges", http.MethodPost, "/v1/dlq/purge", viewer, `{"seqs":[1],"reason":"r"}`, http.StatusForbidden},
			{"UnknownSaga", http.MethodGet, "/v1/sagas/nope", viewer, "", http.StatusNotFound},
			{"UnknownDefinition", http.MethodPost, "/v1/sagas", operator, `{"definition":"nope"}`, http.StatusNotFound},
			{"UnknownRoute", http.MethodGet, "/v1/nope", viewer, "", http.StatusNotFound},
			{"DeleteSagas", http.MethodDelete, "/v1/sagas", operator, "", http.StatusMethodNotAllowed},
			{"DeleteDLQ", http.MethodDelete, "/v1/dlq", operator, "", http.StatusMethodNotAllowed},
			{"ResolveUnflagged", http.MethodPost, "/v1/sagas/" + mustStart(t, c) + "/resolve", operator, `{"reason":"r"}`, http.StatusConflict},
			{"HugeBody", http.MethodPost, "/v1/sagas", operator, `{"definition":"transfer","input":"` + strings.Repeat("x", 2<<20) + `"}`, http.StatusRequestEntityTooLarge},
			{"HugeKey", http.MethodGet, "/v1/sagas?business_key=" + strings.Repeat("k", 300), viewer, "", http.StatusRequestEntityTooLarge},
		} {
			t.Run(tt.name, func(t *testing.T) {
				require.Equal(t, tt.status, check.call(t, tt.method, base+tt.path, tt.token, tt.body))
			})
		}
	})

	// Every documented operation answered 2xx at least once, and every error class was seen.
	statuses := map[int]bool{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			ok := slices.ContainsFunc(check.seen[op.OperationID], func(s int) bool { return s >= 200 && s < 300 })
			require.True(t, ok, "%s %s (%s) never answered 2xx: %v", method, path, op.OperationID, check.seen[op.OperationID])
		}
	}
	for _, ss := range check.seen {
		for _, s := range ss {
			statuses[s] = true
		}
	}
	for _, s := range []int{400, 401, 403, 404, 405, 409, 413} {
		require.True(t, statuses[s], "no %d answer checked", s)
	}
}

// mustStart starts a saga of "transfer" and returns its id.
func mustStart(t *testing.T, c *httpapi.Client) string {
	t.Helper()
	id, err := c.Start(t.Context(), httpapi.StartRequest{Definition: "transfer"})
	require.NoError(t, err)
	return id
}

// requireStatus checks that err is an API error with status.
func requireStatus(t *testing.T, err error, status int) {
	t.Helper()
	ae, ok := errors.AsType[*httpapi.APIError](err)
	require.True(t, ok, "got %v", err)
	require.Equal(t, status, ae.Status, ae.Error())
}

// waitStatus polls the saga until it has status (the test's deadline bounds the wait).
func waitStatus(t *testing.T, c *httpapi.Client, id string, status saga.Status) {
	t.Helper()
	for {
		inst, err := c.Get(t.Context(), id)
		require.NoError(t, err)
		if inst.Status == status {
			return
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("saga %s: still %s, want %s", id, inst.Status, status)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// deadLetterAt stores a message in SAGA_DLQ as bus.DeadLetter does and returns its sequence.
func deadLetterAt(t *testing.T, js jetstream.JetStream, subject, sagaID, payload string) uint64 {
	t.Helper()
	id := uuid.NewString()
	h := nats.Header{}
	h[nats.MsgIdHdr] = []string{id}
	h[bus.HeaderDLQReason] = []string{"payment declined"}
	h[bus.HeaderDLQSubject] = []string{subject}
	h[bus.HeaderDLQDeliveries] = []string{"5"}
	h[protocol.HeaderSagaID] = []string{sagaID}
	h[protocol.HeaderStep] = []string{"charge"}
	ack, err := js.PublishMsg(t.Context(), &nats.Msg{Subject: bus.DLQPrefix + subject, Header: h, Data: []byte(payload)}, jetstream.WithMsgID(id))
	require.NoError(t, err)
	return ack.Sequence
}
