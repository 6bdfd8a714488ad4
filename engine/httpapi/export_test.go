package httpapi

import (
	"github.com/sagaflow/sagaflow/engine"
	"github.com/sagaflow/sagaflow/internal/dlq"
)

// RoutePatterns returns the pattern of every route NewHandler and DLQHandler register (their
// route tables are the only place they register any).
func RoutePatterns() []string {
	h := &handler{e: (*engine.Engine)(nil)}
	var out []string
	for _, rt := range h.routes() {
		out = append(out, rt.pattern)
	}
	for _, rt := range (&dlqHandler{handler: *h, q: (*dlq.Queue)(nil)}).routes() {
		out = append(out, rt.pattern)
	}
	return out
}
