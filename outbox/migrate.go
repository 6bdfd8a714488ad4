package outbox

import (
	"context"
	"embed"
	"fmt"

	"github.com/jmoiron/sqlx"

	"github.com/sagaflow/sagaflow/internal/migrate"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Component is the name under which the outbox's migrations are recorded.
const Component = "outbox"

// Migrate creates or upgrades the outbox and inbox tables (sagaflow_outbox, sagaflow_inbox) in db,
// PostgreSQL or SQLite. It is idempotent and safe to run from several replicas at once.
func Migrate(ctx context.Context, db *sqlx.DB) error {
	if _, err := migrate.Apply(ctx, db, Component, migrations); err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	return nil
}
