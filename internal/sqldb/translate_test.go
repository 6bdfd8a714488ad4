package sqldb_test

import (
	"database/sql"
	"errors"
	"fmt"
	"testing"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/internal/pgtest"
	"github.com/sagaflow/sagaflow/internal/sqldb"
)

func TestTranslate(t *testing.T) {
	t.Parallel()
	require.NoError(t, sqldb.Translate(nil))
	require.Equal(t, sql.ErrNoRows, sqldb.Translate(sql.ErrNoRows))

	// A real refusal from PostgreSQL: a NUL byte in text.
	db := pgtest.New(t)
	_, err := db.Exec(`CREATE TABLE t (k text UNIQUE)`)
	require.NoError(t, err)
	_, err = db.Exec(`INSERT INTO t (k) VALUES ($1)`, "a\x00b")
	require.ErrorContains(t, err, "pq:")
	tr := sqldb.Translate(err)
	require.NotContains(t, tr.Error(), "pq:")
	require.ErrorContains(t, tr, "invalid byte sequence")
	require.ErrorContains(t, tr, "SQLSTATE 22021")
	var se *sqldb.Error
	require.ErrorAs(t, tr, &se)
	require.Equal(t, "22021", se.Code)

	// The driver's error stays reachable for the classifiers.
	_, err = db.Exec(`INSERT INTO t (k) VALUES ('x'), ('x')`)
	tr = fmt.Errorf("insert: %w", sqldb.Translate(err))
	require.True(t, sqldb.IsUniqueViolation(tr))
	var pqErr *pq.Error
	require.True(t, errors.As(tr, &pqErr))
	require.Equal(t, tr.Error(), fmt.Errorf("insert: %w", sqldb.Translate(sqldb.Translate(err))).Error(), "idempotent")
}
