// Package dbtest runs a store test against every SQL dialect Sagaflow supports, so that PostgreSQL
// and the embedded SQLite store stay behaviourally identical.
package dbtest

import (
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/sagaflow/sagaflow/internal/pgtest"
	"github.com/sagaflow/sagaflow/internal/sqldb"
	"github.com/sagaflow/sagaflow/internal/sqlitetest"
)

// Open returns a fresh, empty database of the given dialect, cleaned up with t.
func Open(t testing.TB, d sqldb.Dialect) *sqlx.DB {
	t.Helper()
	if d == sqldb.SQLite {
		return sqlitetest.New(t)
	}
	return pgtest.New(t)
}

// Each runs fn as the parallel subtests "Postgres" and "SQLite", each with a fresh, empty database.
func Each(t *testing.T, fn func(t *testing.T, db *sqlx.DB)) {
	t.Helper()
	for _, d := range []struct {
		name    string
		dialect sqldb.Dialect
	}{{"Postgres", sqldb.Postgres}, {"SQLite", sqldb.SQLite}} {
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			fn(t, Open(t, d.dialect))
		})
	}
}
