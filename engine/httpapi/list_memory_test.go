package httpapi_test

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/engine"
	"github.com/sagaflow/sagaflow/engine/httpapi"
	"github.com/sagaflow/sagaflow/internal/pgtest"
)

// largeAPI serves the API of an engine on PostgreSQL holding n sagas with inputBytes of
// incompressible input each.
func largeAPI(tb testing.TB, n, inputBytes int) http.Handler {
	tb.Helper()
	db := pgtest.New(tb)
	require.NoError(tb, engine.Migrate(tb.Context(), db))
	reg := definitions.NewRegistry()
	def, err := definitions.New("bulky", 1).Step("load", "store", "Load").Build()
	require.NoError(tb, err)
	require.NoError(tb, reg.Register(def))
	e, err := engine.New(engine.Config{DB: db, Definitions: reg})
	require.NoError(tb, err)
	raw := make([]byte, inputBytes*3/4)
	for i := range n {
		_, _ = rand.Read(raw)
		input, err := json.Marshal(map[string]string{"blob": base64.StdEncoding.EncodeToString(raw)})
		require.NoError(tb, err)
		_, err = e.Start(tb.Context(), "bulky", fmt.Sprintf("k-%d", i), input, engine.StartOptions{})
		require.NoError(tb, err)
	}
	return httpapi.NewHandler(e, reg, nil)
}

// allocated returns the bytes the process allocates, on average over runs, while h answers GET
// path in process (no network, no client), and the size of the answer.
func allocated(tb testing.TB, h http.Handler, path string, runs int) (perRequest uint64, body int) {
	tb.Helper()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range runs {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequestWithContext(tb.Context(), http.MethodGet, path, nil))
		require.Equal(tb, http.StatusOK, rec.Code, rec.Body.String())
		body = rec.Body.Len()
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / uint64(runs), body
}

// TestListMemoryIsBounded: a list over sagas that carry 256 KiB inputs allocates about what it
// answers, not what the sagas carry (16 MiB here). Not parallel: it reads the process's
// allocation counter, which parallel tests would add to.
func TestListMemoryIsBounded(t *testing.T) {
	const sagas, input = 64, 256 << 10
	h := largeAPI(t, sagas, input)
	perRequest, body := allocated(t, h, "/v1/sagas?limit=1000", 5)
	t.Logf("GET /v1/sagas?limit=1000 over %d sagas of %d KiB: %d KiB allocated, %d KiB answered", sagas, input>>10, perRequest>>10, body>>10)
	require.Less(t, body, 64<<10, "a summary does not carry the input")
	require.Less(t, perRequest, uint64(2<<20), "the server allocates about what it answers, not the %d MiB of inputs", sagas*input>>20)
}

// BenchmarkListLargeSagas measures GET /v1/sagas over 200 sagas with 100 KB inputs: time, bytes
// allocated per request (B/op) and bytes answered.
func BenchmarkListLargeSagas(b *testing.B) {
	h := largeAPI(b, 200, 100<<10)
	for _, limit := range []int{100, 200} {
		b.Run(fmt.Sprintf("limit=%d", limit), func(b *testing.B) {
			path := fmt.Sprintf("/v1/sagas?limit=%d", limit)
			b.ReportAllocs()
			var body int
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequestWithContext(b.Context(), http.MethodGet, path, nil))
				body = rec.Body.Len()
			}
			b.ReportMetric(float64(body), "answer-B/op")
		})
	}
}
