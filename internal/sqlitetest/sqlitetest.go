// Package sqlitetest gives tests a fresh SQLite database file (pure Go driver, no cgo) in
// t.TempDir(), opened with the same settings as Sagaflow's embedded store.
package sqlitetest

import (
	"path/filepath"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/sagaflow/sagaflow/internal/sqldb"
)

// Path returns the path of a fresh database file in a temporary directory (not yet created).
func Path(t testing.TB) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "sagaflow.db")
}

// New opens a fresh database file, closed in t.Cleanup.
func New(t testing.TB) *sqlx.DB {
	t.Helper()
	db, err := sqldb.Open(t.Context(), "sqlite:"+Path(t))
	if err != nil {
		t.Fatalf("open sqlite test database: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}
