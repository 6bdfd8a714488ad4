package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/engine"
	"github.com/sagaflow/sagaflow/engine/httpapi"
	"github.com/sagaflow/sagaflow/internal/dbtest"
)

// TestAPILimits: keys and inputs over a limit, or with control characters, are answered 4xx with
// a JSON error naming the limit, and nothing is stored; no answer carries driver text.
func TestAPILimits(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
		require.NoError(t, engine.Migrate(t.Context(), db))
		reg := definitions.NewRegistry()
		def, err := definitions.New("transfer", 1).Step("debit", "bank", "Debit").Build()
		require.NoError(t, err)
		require.NoError(t, reg.Register(def))
		e, err := engine.New(engine.Config{DB: db, Definitions: reg, MaxInputBytes: 4096})
		require.NoError(t, err)
		srv := httptest.NewServer(httpapi.NewHandler(e, reg, nil))
		t.Cleanup(srv.Close)

		do := func(method, path string, body []byte) (int, httpapi.Error, string) {
			req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+path, bytes.NewReader(body))
			require.NoError(t, err)
			resp, err := srv.Client().Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			raw, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			var apiErr httpapi.Error
			if resp.StatusCode >= 300 {
				require.NoError(t, json.Unmarshal(raw, &apiErr), string(raw))
			}
			return resp.StatusCode, apiErr, string(raw)
		}
		start := func(key string, input json.RawMessage) []byte {
			b, err := json.Marshal(httpapi.StartRequest{Definition: "transfer", BusinessKey: key, Input: input})
			require.NoError(t, err)
			return b
		}
		tests := []struct {
			name   string
			method string
			path   string
			body   []byte
			status int
			code   string
			msg    string
		}{
			{"KeyOf100000Chars", "POST", "/v1/sagas", start(strings.Repeat("k", 100_000), nil), 413, "too_large",
				"business key is 100000 bytes, over the limit of 256 bytes"},
			{"KeyOf900KB", "POST", "/v1/sagas", start(strings.Repeat("k", 900_000), nil), 413, "too_large",
				"business key is 900000 bytes, over the limit of 256 bytes"},
			{"KeyWithNUL", "POST", "/v1/sagas", start("a\x00b", nil), 400, "bad_request", "business key contains U+0000 at byte 1"},
			{"KeyWithNewline", "POST", "/v1/sagas", start("a\nforged row", nil), 400, "bad_request", "U+000A"},
			{"KeyWithEscape", "POST", "/v1/sagas", start("\x1b[31mred", nil), 400, "bad_request", "U+001B"},
			{"InputOverLimit", "POST", "/v1/sagas", start("k", json.RawMessage(`"`+strings.Repeat("x", 5000)+`"`)), 413, "too_large",
				"input is 5002 bytes, over the limit of 4096 bytes (Config.MaxInputBytes)"},
			{"BodyOverLimit", "POST", "/v1/sagas", bytes.Repeat([]byte(" "), 2<<20), 413, "too_large", "request body"},
			{"ListByKeyWithNUL", "GET", "/v1/sagas?business_key=" + url.QueryEscape("a\x00b"), nil, 400, "bad_request", "business_key"},
			{"GetByKeyWithNUL", "GET", "/v1/definitions/transfer/sagas/" + url.PathEscape("a\x00b"), nil, 400, "bad_request", "U+0000"},
			{"GetByLongKey", "GET", "/v1/definitions/transfer/sagas/" + strings.Repeat("k", 300), nil, 413, "too_large", "256 bytes"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				status, apiErr, raw := do(tt.method, tt.path, tt.body)
				require.Equal(t, tt.status, status, raw)
				require.Equal(t, tt.code, apiErr.Code)
				require.Contains(t, apiErr.Message, tt.msg)
				require.NotContains(t, raw, "pq:")
			})
		}
		list, err := e.List(t.Context(), engine.Filter{})
		require.NoError(t, err)
		require.Empty(t, list, "nothing refused was stored")

		// At the limit, any printable UTF-8 is fine.
		key := strings.Repeat("é", 128) // 256 bytes
		status, _, raw := do("POST", "/v1/sagas", start(key, json.RawMessage(`"`+strings.Repeat("x", 4000)+`"`)))
		require.Equal(t, http.StatusCreated, status, raw)
		status, _, raw = do("GET", "/v1/definitions/transfer/sagas/"+url.PathEscape(key), nil)
		require.Equal(t, http.StatusOK, status, raw)
	})
}

// brokenEngine fails every read the way a database driver would; only Get is used.
type brokenEngine struct{ httpapi.Engine }

func (brokenEngine) Get(context.Context, string) (*engine.Instance, error) {
	return nil, fmt.Errorf("load saga: %w", errors.New(`pq: invalid byte sequence for encoding "UTF8": 0x00`))
}

// TestAPIInternalErrorsStayInTheLog: a 500 answer says only that it failed; the cause is logged.
func TestAPIInternalErrorsStayInTheLog(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(httpapi.NewHandler(brokenEngine{}, nil, nil))
	t.Cleanup(srv.Close)
	resp, err := srv.Client().Get(srv.URL + "/v1/sagas/x")
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusInternalServerError, resp.StatusCode)
	require.NotContains(t, string(raw), "pq:")
	var apiErr httpapi.Error
	require.NoError(t, json.Unmarshal(raw, &apiErr))
	require.Equal(t, "internal", apiErr.Code)
	require.Contains(t, apiErr.Message, "internal error")
}
