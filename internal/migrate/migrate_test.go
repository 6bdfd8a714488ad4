package migrate_test

import (
	"testing"
	"testing/fstest"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/internal/dbtest"
	"github.com/sagaflow/sagaflow/internal/migrate"
	"github.com/sagaflow/sagaflow/internal/sqldb"
)

func TestApply(t *testing.T) {
	t.Parallel()
	fsys := fstest.MapFS{
		"migrations/0001_create.sql":         {Data: []byte(`CREATE TABLE a (id INTEGER PRIMARY KEY); CREATE TABLE b (id INTEGER);`)},
		"migrations/0002_index.postgres.sql": {Data: []byte(`CREATE INDEX a_pg ON a (id)`)},
		"migrations/0002_index.sqlite.sql":   {Data: []byte(`CREATE INDEX a_lite ON a (id)`)},
		"migrations/0003_insert.sql":         {Data: []byte(`INSERT INTO a (id) VALUES (7)`)},
		"migrations/README.md":               {Data: []byte(`not a migration`)},
	}
	dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
		n, err := migrate.Apply(t.Context(), db, "demo", fsys)
		require.NoError(t, err)
		require.Equal(t, 3, n)

		n, err = migrate.Apply(t.Context(), db, "demo", fsys)
		require.NoError(t, err)
		require.Zero(t, n, "a second run applies nothing")

		var rows int
		require.NoError(t, db.Get(&rows, `SELECT count(*) FROM a`))
		require.Equal(t, 1, rows, "0003 ran exactly once")

		var versions []int
		require.NoError(t, db.Select(&versions, db.Rebind(`SELECT version FROM sagaflow_migrations WHERE component = ? ORDER BY version`), "demo"))
		require.Equal(t, []int{1, 2, 3}, versions)
	})
}

func TestApplyRollsBackAFailedFile(t *testing.T) {
	t.Parallel()
	fsys := fstest.MapFS{
		"0001_ok.sql":  {Data: []byte(`CREATE TABLE ok (id INTEGER)`)},
		"0002_bad.sql": {Data: []byte(`CREATE TABLE half (id INTEGER); THIS IS NOT SQL`)},
	}
	dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
		n, err := migrate.Apply(t.Context(), db, "demo", fsys)
		require.ErrorContains(t, err, "0002_bad.sql")
		require.Equal(t, 1, n)
		var versions []int
		require.NoError(t, db.Select(&versions, `SELECT version FROM sagaflow_migrations`))
		require.Equal(t, []int{1}, versions)
		_, err = db.Exec(`SELECT id FROM half`)
		require.Error(t, err, "the failed file's first statement was rolled back")
	})
}

func TestFilesRejectsBadNumbering(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		fsys fstest.MapFS
		want string
	}{
		{"Gap", fstest.MapFS{"0001_a.sql": {}, "0003_c.sql": {}}, "expected version 0002"},
		{"Duplicate", fstest.MapFS{"0001_a.sql": {}, "0001_b.sql": {}}, "also used by"},
		{"BadName", fstest.MapFS{"1_a.sql": {}}, "must be NNNN_name"},
		{"StartsAtTwo", fstest.MapFS{"0002_a.sql": {}}, "expected version 0001"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := migrate.Files(tt.fsys, sqldb.Postgres)
			require.ErrorContains(t, err, tt.want)
		})
	}
}
