package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sagaflow/sagaflow/engine/httpapi"
	"github.com/sagaflow/sagaflow/internal/bus"
)

// ReadyChecks are the readiness checks of a process using db and the bus through nc and js:
// "database" (db answers a ping), "nats" (nc is connected) and "streams" (every Sagaflow stream
// exists; a process recreates missing ones within seconds, see bus.KeepStreams).
func ReadyChecks(db *sqlx.DB, nc *nats.Conn, js jetstream.JetStream) []httpapi.Check {
	return []httpapi.Check{
		{Name: "database", Func: func(ctx context.Context) error {
			if err := db.PingContext(ctx); err != nil {
				return fmt.Errorf("ping: %w", err)
			}
			return nil
		}},
		{Name: "nats", Func: func(context.Context) error {
			if s := nc.Status(); s != nats.CONNECTED {
				return fmt.Errorf("connection %s", s)
			}
			return nil
		}},
		{Name: "streams", Func: func(ctx context.Context) error {
			if nc.Status() != nats.CONNECTED {
				return errors.New("unknown: NATS is not connected")
			}
			missing, err := bus.MissingStreams(ctx, js)
			if err != nil {
				return err
			}
			if len(missing) > 0 {
				return fmt.Errorf("missing %s", strings.Join(missing, ", "))
			}
			return nil
		}},
	}
}

// HealthHandler serves GET /healthz (alive) and GET /readyz (ReadyChecks of the node's database
// and bus), for a process that serves them without the API (sagaflow relay's metrics listener).
func (n *Node) HealthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /healthz", httpapi.HealthHandler())
	mux.Handle("GET /readyz", httpapi.ReadyHandler(ReadyChecks(n.cfg.DB, n.cfg.NATS, n.js)...))
	return mux
}
