package order

import (
	"context"
	"fmt"
	"strings"

	"github.com/jmoiron/sqlx"
)

// ApplySchema creates a service's tables from ddl, statements written with IF NOT EXISTS so that
// applying it again (a restart, a second replica) changes nothing. It runs in one transaction; on
// PostgreSQL a transaction-scoped advisory lock keeps replicas starting together from racing on
// the catalog. A real service would use its own migration tool; the example keeps to plain SQL
// that PostgreSQL and SQLite both accept.
func ApplySchema(ctx context.Context, db *sqlx.DB, service, ddl string) error {
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("apply %s schema: %w", service, err)
	}
	defer func() { _ = tx.Rollback() }()
	if db.DriverName() == "postgres" {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext('sagaflow-example-schema'))`); err != nil {
			return fmt.Errorf("apply %s schema: lock: %w", service, err)
		}
	}
	for _, stmt := range strings.Split(ddl, ";") {
		if strings.TrimSpace(stripComments(stmt)) == "" {
			continue
		}
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("apply %s schema: %w", service, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("apply %s schema: commit: %w", service, err)
	}
	return nil
}

// stripComments drops "--" comment lines, so a file ending in a comment adds no empty statement.
func stripComments(s string) string {
	var b strings.Builder
	for line := range strings.Lines(s) {
		if !strings.HasPrefix(strings.TrimSpace(line), "--") {
			b.WriteString(line)
		}
	}
	return b.String()
}
