package ordertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/examples/order"
)

// PostgresEnv names the variable holding the DSN of the PostgreSQL server the tests use (the
// repository's scripts/test.sh sets it); without it, 127.0.0.1:5432 (user postgres) is tried.
const PostgresEnv = "SAGAFLOW_TEST_POSTGRES"

// EachDB runs fn as two subtests, "SQLite" on a fresh database file and "Postgres" on a fresh
// schema of the test server (dropped when the test ends), so a service's SQL is proved on both.
func EachDB(t *testing.T, fn func(t *testing.T, db *sqlx.DB)) {
	t.Helper()
	t.Run("SQLite", func(t *testing.T) {
		t.Parallel()
		fn(t, SQLite(t))
	})
	t.Run("Postgres", func(t *testing.T) {
		t.Parallel()
		fn(t, Postgres(t))
	})
}

// SQLite opens a fresh SQLite database in the test's temporary directory.
func SQLite(t testing.TB) *sqlx.DB {
	t.Helper()
	db, err := order.OpenDB(t.Context(), "sqlite:"+filepath.Join(t.TempDir(), "service.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// Postgres opens a fresh schema of the test PostgreSQL server (see PostgresEnv), selected through
// search_path, with a pool of at most 4 connections; the schema is dropped when the test ends.
func Postgres(t testing.TB) *sqlx.DB {
	t.Helper()
	dsn := os.Getenv(PostgresEnv)
	if dsn == "" {
		dsn = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	}
	admin, err := sqlx.Open("postgres", dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = admin.Close() })
	admin.SetMaxOpenConns(1)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	require.NoError(t, admin.PingContext(ctx), "no PostgreSQL at %s (set %s, or run scripts/test.sh, which starts one)", dsn, PostgresEnv)
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	schema := "example_" + hex.EncodeToString(b)
	_, err = admin.ExecContext(ctx, `CREATE SCHEMA `+schema)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = admin.ExecContext(context.Background(), `DROP SCHEMA `+schema+` CASCADE`) })
	u, err := url.Parse(dsn)
	require.NoError(t, err, "%s must be a postgres:// URL", PostgresEnv)
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	db, err := order.OpenDB(t.Context(), u.String())
	require.NoError(t, err)
	db.SetMaxOpenConns(4)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// NATS starts a NATS server with JetStream inside the test process, on 127.0.0.1 and a random
// port, its store in the test's temporary directory; it is shut down when the test ends.
func NATS(t testing.TB) *server.Server {
	t.Helper()
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: t.TempDir(),
		NoSigs: true, NoLog: true,
	})
	require.NoError(t, err)
	srv.Start()
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	require.True(t, srv.ReadyForConnections(30*time.Second), "nats-server did not start")
	return srv
}

// JetStream connects to srv and returns its JetStream API; the connection closes when the test
// ends.
func JetStream(t testing.TB, srv *server.Server) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(srv.ClientURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return js
}
