package pgtest_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/internal/pgtest"
)

func TestNewIsolatesSchemas(t *testing.T) {
	t.Parallel()
	a, b := pgtest.New(t), pgtest.New(t)
	_, err := a.Exec(`CREATE TABLE things (id int)`)
	require.NoError(t, err)
	_, err = a.Exec(`INSERT INTO things VALUES (1)`)
	require.NoError(t, err)
	_, err = b.Exec(`CREATE TABLE things (id int)`)
	require.NoError(t, err, "the second schema must not see the first one's table")
	var n int
	require.NoError(t, b.Get(&n, `SELECT count(*) FROM things`))
	require.Equal(t, 0, n)
}
