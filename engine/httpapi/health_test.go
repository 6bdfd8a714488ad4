package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/engine/httpapi"
)

func TestReadyHandler(t *testing.T) {
	t.Parallel()
	ok := httpapi.Check{Name: "database", Func: func(context.Context) error { return nil }}
	down := httpapi.Check{Name: "nats", Func: func(context.Context) error { return errors.New("connection RECONNECTING") }}
	slow := httpapi.Check{Name: "streams", Func: func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }}
	tests := []struct {
		name     string
		checks   []httpapi.Check
		status   int
		notReady map[string]string
	}{
		{"NoChecks", nil, http.StatusOK, nil},
		{"AllHold", []httpapi.Check{ok}, http.StatusOK, nil},
		{"OneFails", []httpapi.Check{ok, down}, http.StatusServiceUnavailable, map[string]string{"nats": "connection RECONNECTING"}},
		{"HangingCheckTimesOut", []httpapi.Check{slow, ok}, http.StatusServiceUnavailable, map[string]string{"streams": context.DeadlineExceeded.Error()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := httptest.NewRecorder()
			httpapi.ReadyHandler(tt.checks...).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
			require.Equal(t, tt.status, rec.Code)
			require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
			var body httpapi.ReadyResponse
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body))
			require.Equal(t, tt.notReady, body.NotReady)
			if tt.status == http.StatusOK {
				require.Equal(t, "ready", body.Status)
			} else {
				require.Equal(t, "not ready", body.Status)
			}
		})
	}

	rec := httptest.NewRecorder()
	httpapi.HealthHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	require.JSONEq(t, `{"status":"ok"}`, rec.Body.String())
}
