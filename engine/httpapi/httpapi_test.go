package httpapi_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/engine"
	"github.com/sagaflow/sagaflow/engine/httpapi"
	"github.com/sagaflow/sagaflow/internal/dbtest"
	"github.com/sagaflow/sagaflow/internal/sqlitetest"
	"github.com/sagaflow/sagaflow/saga"
)

// setup serves the API of an engine on a real database (no bus: the API starts, reads, cancels
// and redrives through the store alone) and returns a client of it.
func setup(t *testing.T, db *sqlx.DB) *httpapi.Client {
	t.Helper()
	require.NoError(t, engine.Migrate(t.Context(), db))
	reg := definitions.NewRegistry()
	def, err := definitions.New("transfer", 1).
		Step("debit", "bank", "Debit").Compensation("Credit").
		Step("notify", "mail", "Send").
		Build()
	require.NoError(t, err)
	require.NoError(t, reg.Register(def))
	e, err := engine.New(engine.Config{DB: db, Definitions: reg})
	require.NoError(t, err)
	srv := httptest.NewServer(httpapi.NewHandler(e, reg, nil))
	t.Cleanup(srv.Close)
	return httpapi.NewClient(srv.URL, "tester", srv.Client())
}

func TestAPI(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
		c := setup(t, db)
		ctx := t.Context()

		id, err := c.Start(ctx, httpapi.StartRequest{Definition: "transfer", BusinessKey: "t-1", Input: json.RawMessage(`{"amount":5}`), IdempotencyKey: "k-1"})
		require.NoError(t, err)
		again, err := c.Start(ctx, httpapi.StartRequest{Definition: "transfer", BusinessKey: "t-1", Input: json.RawMessage(`{"amount":5}`), IdempotencyKey: "k-1"})
		require.NoError(t, err)
		require.Equal(t, id, again, "the idempotency key returns the same saga")

		inst, err := c.Get(ctx, id)
		require.NoError(t, err)
		require.Equal(t, saga.StatusRunning, inst.Status)
		require.Equal(t, "t-1", inst.BusinessKey)
		require.JSONEq(t, `{"amount":5}`, string(inst.Data.Input))

		byKey, err := c.GetByKey(ctx, "transfer", "t-1")
		require.NoError(t, err)
		require.Equal(t, id, byKey.ID)

		id2, err := c.Start(ctx, httpapi.StartRequest{Definition: "transfer", BusinessKey: "t-2"})
		require.NoError(t, err)
		page, err := c.ListSagas(ctx, engine.Filter{Definition: "transfer", Limit: 1})
		require.NoError(t, err)
		require.Len(t, page.Sagas, 1)
		require.Equal(t, id2, page.Sagas[0].ID, "newest first")
		require.Equal(t, id2, page.Next)
		page, err = c.ListSagas(ctx, engine.Filter{Definition: "transfer", Before: page.Next})
		require.NoError(t, err)
		require.Len(t, page.Sagas, 1)
		require.Equal(t, id, page.Sagas[0].ID)
		require.Empty(t, page.Next)
		page, err = c.ListSagas(ctx, engine.Filter{BusinessKey: "t-2"})
		require.NoError(t, err)
		require.Len(t, page.Sagas, 1)
		require.Equal(t, "debit", page.Sagas[0].StepName, "a summary names its current step")

		// Filters by version and start time; the counts take the same filters.
		page, err = c.ListSagas(ctx, engine.Filter{Version: 2})
		require.NoError(t, err)
		require.Empty(t, page.Sagas, "no saga runs version 2")
		page, err = c.ListSagas(ctx, engine.Filter{Version: 1, StartedAfter: time.Now().Add(-time.Hour), StartedBefore: time.Now().Add(time.Hour)})
		require.NoError(t, err)
		require.Len(t, page.Sagas, 2)
		page, err = c.ListSagas(ctx, engine.Filter{StartedBefore: time.Now().Add(-time.Hour)})
		require.NoError(t, err)
		require.Empty(t, page.Sagas, "none started an hour ago")
		counts, err := c.CountSagas(ctx, engine.Filter{Definition: "transfer", Version: 1})
		require.NoError(t, err)
		require.Equal(t, httpapi.CountsResponse{Counts: engine.VersionCounts{Running: 2}, Total: 2}, counts)
		counts, err = c.CountSagas(ctx, engine.Filter{StartedAfter: time.Now().Add(time.Hour)})
		require.NoError(t, err)
		require.Equal(t, httpapi.CountsResponse{}, counts)

		// The operator's queue: only the flagged saga (the engine flags a late effect; here the
		// column is set directly, as its migration defines it).
		page, err = c.ListSagas(ctx, engine.Filter{NeedsAttention: true})
		require.NoError(t, err)
		require.Empty(t, page.Sagas)
		_, err = db.ExecContext(ctx, db.Rebind(`UPDATE sagaflow_instances SET attention = ? WHERE id = ?`), "late effect of step \"debit\"", id2)
		require.NoError(t, err)
		page, err = c.ListSagas(ctx, engine.Filter{NeedsAttention: true})
		require.NoError(t, err)
		require.Len(t, page.Sagas, 1)
		require.Equal(t, id2, page.Sagas[0].ID)
		require.True(t, page.Sagas[0].NeedsAttention)
		require.Equal(t, `late effect of step "debit"`, page.Sagas[0].Attention)
		resolved, err := c.Resolve(ctx, id2, "reconciled")
		require.NoError(t, err)
		require.False(t, resolved.NeedsAttention)
		page, err = c.ListSagas(ctx, engine.Filter{NeedsAttention: true})
		require.NoError(t, err)
		require.Empty(t, page.Sagas)

		cancelled, err := c.Cancel(ctx, id, "customer asked")
		require.NoError(t, err)
		require.Equal(t, id, cancelled.ID)
		hist, err := c.History(ctx, id)
		require.NoError(t, err)
		var kinds []engine.HistoryKind
		for _, h := range hist {
			kinds = append(kinds, h.Kind)
			if h.Kind == engine.HistoryCancel {
				require.Equal(t, "tester", h.Actor)
				require.Contains(t, string(h.Detail), "customer asked")
			}
		}
		require.Contains(t, kinds, engine.HistoryStarted)
		require.Contains(t, kinds, engine.HistoryCancel)

		defs, err := c.Definitions(ctx)
		require.NoError(t, err)
		require.Len(t, defs.Definitions, 1)
		require.Equal(t, "transfer", defs.Definitions[0].Name)
		require.Len(t, defs.Versions, 1)
		require.Equal(t, "transfer", defs.Versions[0].Name)
		require.Equal(t, engine.VersionCounts{Running: 1, Compensating: 1}, defs.Versions[0].Counts, "t-2 runs, t-1 was cancelled")
	})
}

func TestAPIErrors(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
		c := setup(t, db)
		ctx := t.Context()
		tests := []struct {
			name   string
			call   func() error
			status int
			code   string
			msg    string
		}{
			{"UnknownSaga", func() error { _, err := c.Get(ctx, "nope"); return err }, 404, "not_found", "not found"},
			{"UnknownKey", func() error { _, err := c.GetByKey(ctx, "transfer", "nope"); return err }, 404, "not_found", "not found"},
			{"UnknownDefinition", func() error {
				_, err := c.Start(ctx, httpapi.StartRequest{Definition: "nope"})
				return err
			}, 404, "not_found", "nope"},
			{"NoDefinition", func() error { _, err := c.Start(ctx, httpapi.StartRequest{}); return err }, 400, "bad_request", "definition is required"},
			{"BadStatus", func() error { _, err := c.ListSagas(ctx, engine.Filter{Status: "sleeping"}); return err }, 400, "bad_request", "status"},
			{"BadLimit", func() error { _, err := c.ListSagas(ctx, engine.Filter{Limit: 1001}); return err }, 400, "bad_request", "limit"},
			{"EmptyStartRange", func() error {
				now := time.Now()
				_, err := c.CountSagas(ctx, engine.Filter{StartedAfter: now, StartedBefore: now})
				return err
			}, 400, "bad_request", "started_after"},
			{"CancelUnknown", func() error { _, err := c.Cancel(ctx, "nope", ""); return err }, 404, "not_found", "not found"},
			{"ResolveNotFlagged", func() error {
				id, err := c.Start(ctx, httpapi.StartRequest{Definition: "transfer"})
				require.NoError(t, err)
				_, err = c.Resolve(ctx, id, "")
				return err
			}, 409, "conflict", "does not need attention"},
			{"RedriveRunning", func() error {
				id, err := c.Start(ctx, httpapi.StartRequest{Definition: "transfer"})
				require.NoError(t, err)
				_, err = c.Redrive(ctx, id, "")
				return err
			}, 409, "conflict", "not failed"},
			{"RetryRunning", func() error {
				id, err := c.Start(ctx, httpapi.StartRequest{Definition: "transfer"})
				require.NoError(t, err)
				_, err = c.RetryStep(ctx, id, httpapi.RetryRequest{Reason: "fix", InputPatch: json.RawMessage(`{"amount":6}`)})
				return err
			}, 409, "conflict", "cannot be retried: status running"},
			{"RetryPatchAndInput", func() error {
				_, err := c.RetryStep(ctx, "any", httpapi.RetryRequest{InputPatch: json.RawMessage(`{}`), Input: json.RawMessage(`{}`)})
				return err
			}, 400, "bad_request", "not both"},
			{"RetryUnknown", func() error { _, err := c.RetryStep(ctx, "nope", httpapi.RetryRequest{}); return err }, 404, "not_found", "not found"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				err := tt.call()
				var ae *httpapi.APIError
				require.True(t, errors.As(err, &ae), "got %v", err)
				require.Equal(t, tt.status, ae.Status)
				require.Equal(t, tt.code, ae.Body.Code)
				require.Contains(t, ae.Body.Message, tt.msg)
			})
		}
	})
}

func TestAPIRejectsMalformedBodies(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
		require.NoError(t, engine.Migrate(t.Context(), db))
		e, err := engine.New(engine.Config{DB: db, Definitions: definitions.NewRegistry()})
		require.NoError(t, err)
		srv := httptest.NewServer(httpapi.NewHandler(e, nil, nil))
		t.Cleanup(srv.Close)
		for _, body := range []string{`{`, `{"definition":"x","bogus":1}`, `[]`} {
			resp, err := srv.Client().Post(srv.URL+"/v1/sagas", "application/json", strings.NewReader(body))
			require.NoError(t, err)
			var e httpapi.Error
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&e))
			resp.Body.Close()
			require.Equal(t, http.StatusBadRequest, resp.StatusCode, body)
			require.Equal(t, "bad_request", e.Code)
		}
	})
}

// TestListRejectsBadParams: a malformed selection is a 400 naming its parameter, on the list and
// on the counts.
func TestListRejectsBadParams(t *testing.T) {
	t.Parallel()
	db := sqlitetest.New(t)
	require.NoError(t, engine.Migrate(t.Context(), db))
	e, err := engine.New(engine.Config{DB: db, Definitions: definitions.NewRegistry()})
	require.NoError(t, err)
	h := httpapi.NewHandler(e, nil, nil)
	for _, path := range []string{"/v1/sagas", "/v1/sagas/counts"} {
		for _, tt := range []struct{ query, want string }{
			{"started_after=yesterday", `started_after="yesterday": want an RFC 3339 time`},
			{"started_before=2026-11-29", `started_before="2026-11-29": want an RFC 3339 time`},
			{"version=0", `version="0"`},
			{"version=two", `version="two"`},
			{"needs_attention=maybe", `needs_attention="maybe"`},
		} {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequestWithContext(t.Context(), http.MethodGet, path+"?"+tt.query, nil))
			require.Equal(t, http.StatusBadRequest, rec.Code, path)
			var e httpapi.Error
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &e))
			require.Equal(t, "bad_request", e.Code)
			require.Contains(t, e.Message, tt.want)
		}
	}
}

// TestRouteMissesAreJSON: a path no route takes answers 404 and a route's path with another
// method 405 with Allow, both as the API's JSON error.
func TestRouteMissesAreJSON(t *testing.T) {
	t.Parallel()
	db := sqlitetest.New(t)
	require.NoError(t, engine.Migrate(t.Context(), db))
	e, err := engine.New(engine.Config{DB: db, Definitions: definitions.NewRegistry()})
	require.NoError(t, err)
	h := httpapi.NewHandler(e, nil, nil)
	for _, tt := range []struct {
		method, path, code string
		status             int
	}{
		{http.MethodGet, "/v1/nope", "not_found", http.StatusNotFound},
		{http.MethodDelete, "/v1/sagas", "method_not_allowed", http.StatusMethodNotAllowed},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequestWithContext(t.Context(), tt.method, tt.path, nil))
		require.Equal(t, tt.status, rec.Code)
		var e httpapi.Error
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &e), rec.Body.String())
		require.Equal(t, tt.code, e.Code)
		if tt.status == http.StatusMethodNotAllowed {
			require.Contains(t, rec.Header().Get("Allow"), http.MethodGet)
		}
	}
}
