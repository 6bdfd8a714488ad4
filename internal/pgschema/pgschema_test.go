package pgschema

import (
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"
)

func TestCreateIsolatesAndDrops(t *testing.T) {
	ctx := t.Context()
	base, err := Find(ctx, "")
	require.NoError(t, err)
	dsn, drop, err := Create(ctx, base, "pgschema_test")
	require.NoError(t, err)
	db, err := sqlx.Open("postgres", dsn)
	require.NoError(t, err)
	_, err = db.ExecContext(ctx, `CREATE TABLE probe (id int)`)
	require.NoError(t, err)
	var schema string
	require.NoError(t, db.GetContext(ctx, &schema, `SELECT table_schema FROM information_schema.tables WHERE table_name = 'probe'`))
	require.Regexp(t, `^pgschema_test_[0-9a-f]{12}$`, schema)
	require.NoError(t, db.Close())
	require.NoError(t, drop(ctx))

	admin, err := sqlx.Open("postgres", base)
	require.NoError(t, err)
	defer admin.Close()
	var n int
	require.NoError(t, admin.GetContext(ctx, &n, `SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1`, schema))
	require.Zero(t, n, "the schema is dropped")
}

func TestFindReportsAMissingServer(t *testing.T) {
	_, err := Find(t.Context(), "postgres://postgres@127.0.0.1:1/x?sslmode=disable&connect_timeout=2")
	require.ErrorContains(t, err, "no PostgreSQL answers")
}
