package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/engine"
	"github.com/sagaflow/sagaflow/engine/httpapi"
	"github.com/sagaflow/sagaflow/internal/sqlitetest"
)

// FuzzAPI sends the API whatever a client may: any method, path, query and body, against a real
// engine on SQLite. Whatever comes in, the API answers — never panics, never a 5xx (bad input is
// the client's error, 4xx), and always JSON.
func FuzzAPI(f *testing.F) {
	db := sqlitetest.New(f)
	require.NoError(f, engine.Migrate(context.Background(), db))
	reg := definitions.NewRegistry()
	def, err := definitions.New("transfer", 1).Step("debit", "bank", "Debit").Compensation("Credit").Build()
	require.NoError(f, err)
	require.NoError(f, reg.Register(def))
	e, err := engine.New(engine.Config{DB: db, Definitions: reg})
	require.NoError(f, err)
	h := httpapi.NewHandler(e, reg, nil)

	f.Add("POST", "/v1/sagas", `{"definition":"transfer","business_key":"t-1","input":{"amount":5}}`)
	f.Add("POST", "/v1/sagas", `{"definition":"transfer","business_key":"\u0000\u001b[31m","input":1}`)
	f.Add("POST", "/v1/sagas", `{"definition":"nope","input":`)
	f.Add("POST", "/v1/sagas", `{"definition":"transfer","extra":true}`)
	f.Add("GET", "/v1/sagas?limit=0&status=%00&business_key=x", "")
	f.Add("GET", "/v1/sagas/not-a-saga/history", "")
	f.Add("POST", "/v1/sagas/x/cancel", `{"reason":5}`)
	f.Add("GET", "/v1/definitions/transfer/sagas/"+strings.Repeat("k", 300), "")
	f.Fuzz(func(t *testing.T, method, target, body string) {
		if !strings.HasPrefix(target, "/") || strings.ContainsAny(target, " \r\n\t") {
			return // not a request line a client can send
		}
		if _, err := url.ParseRequestURI(target); err != nil {
			return // the server's own parser refuses it before any handler
		}
		switch method {
		case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch:
		default:
			return
		}
		req := httptest.NewRequestWithContext(t.Context(), method, "http://api"+target, strings.NewReader(body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		require.Less(t, rec.Code, 500, "%s %s %q: %s", method, target, body, rec.Body.String())
		if rec.Code != http.StatusNotFound && rec.Code != http.StatusMethodNotAllowed || rec.Body.Len() > 0 {
			if rec.Body.Len() > 0 && strings.HasPrefix(target, "/v1/") {
				require.True(t, json.Valid(rec.Body.Bytes()), "%s %s answered non-JSON: %q", method, target, rec.Body.String())
			}
		}
	})
}
