package httpapi

import (
	"context"
	"net/http"
	"sync"
	"time"
)

// Check is one condition of a process's readiness, such as "database" or "nats". Func returns nil
// when the condition holds, and otherwise an error saying why not; it must honour ctx.
type Check struct {
	Name string
	Func func(context.Context) error
}

// ReadyResponse is the body of GET /readyz.
type ReadyResponse struct {
	// Status is "ready" (HTTP 200) or "not ready" (HTTP 503).
	Status string `json:"status"`
	// NotReady maps the name of each failing check to its reason.
	NotReady map[string]string `json:"not_ready,omitempty"`
}

// checkTimeout bounds every readiness check (they run concurrently): a probe answers within it.
const checkTimeout = 3 * time.Second

// HealthHandler answers GET /healthz with 200 {"status":"ok"} as long as the process serves HTTP:
// liveness, which says nothing about its dependencies (restarting a process because NATS is down
// does not bring NATS back).
func HealthHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
}

// ReadyHandler answers GET /readyz: it runs every check concurrently (each bounded by 3 seconds)
// and answers 200 {"status":"ready"} when all hold, else 503 {"status":"not ready","not_ready":
// {"<check>":"<reason>"}} naming each one that does not.
func ReadyHandler(checks ...Check) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), checkTimeout)
		defer cancel()
		var (
			mu       sync.Mutex
			wg       sync.WaitGroup
			notReady = map[string]string{}
		)
		for _, c := range checks {
			wg.Go(func() {
				if err := c.Func(ctx); err != nil {
					mu.Lock()
					notReady[c.Name] = err.Error()
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if len(notReady) > 0 {
			writeJSON(w, http.StatusServiceUnavailable, ReadyResponse{Status: "not ready", NotReady: notReady})
			return
		}
		writeJSON(w, http.StatusOK, ReadyResponse{Status: "ready"})
	})
}
