package outbox

import (
	"context"
	"embed"
	"fmt"
	"io/fs"

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

// ErrMigrationsPending is matched by the error of CheckMigrations (and of engine.CheckMigrations
// and participant.CheckMigrations): the database schema is behind the code.
var ErrMigrationsPending = migrate.ErrPending

// CheckMigrations returns nil when every outbox migration is applied to db, and otherwise an error
// matching ErrMigrationsPending that names the pending files. It reads only: a process running as
// a role without DDL rights (the recommended production setup, docs/security.md) checks the schema
// with it instead of calling Migrate.
func CheckMigrations(ctx context.Context, db *sqlx.DB) error {
	return migrate.Check(ctx, db, map[string]fs.FS{Component: migrations})
}
