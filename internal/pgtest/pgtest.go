// Package pgtest gives tests a real, isolated PostgreSQL.
//
// The server is found once per test binary, in this order: the DSN in SAGAFLOW_TEST_POSTGRES; a
// server answering on 127.0.0.1:5432 (user postgres, trust auth). scripts/test.sh — the README's
// test command — sets SAGAFLOW_TEST_POSTGRES to a private throwaway cluster when neither exists, so a
// fresh machine runs the suite too. Without any server, tests fail with a message that says so;
// they never skip.
//
// New gives each test its own schema (selected through search_path) that is dropped in t.Cleanup,
// so tests run in parallel with no shared tables and no ordering between them.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // PostgreSQL driver

	"github.com/sagaflow/sagaflow/internal/pgschema"
	"github.com/sagaflow/sagaflow/internal/sqldb"
)

// EnvDSN names the environment variable that points tests at a PostgreSQL server.
const EnvDSN = pgschema.EnvDSN

var (
	findOnce sync.Once
	baseDSN  string
	adminDB  *sqlx.DB
	findErr  error
)

// find finds the server as the benchmarks do (pgschema.Find) and opens the admin pool.
func find() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dsn, err := pgschema.Find(ctx, "")
	if err != nil {
		findErr = fmt.Errorf("no PostgreSQL for tests (set %s to a DSN, or run scripts/test.sh, which starts a throwaway server): %w", EnvDSN, err)
		return
	}
	db, err := sqlx.Open("postgres", dsn)
	if err != nil {
		findErr = fmt.Errorf("open %s: %w", dsn, err)
		return
	}
	db.SetMaxOpenConns(4)
	baseDSN, adminDB = dsn, db
}

// BaseDSN returns the DSN of the test server itself (no schema selected).
func BaseDSN(t testing.TB) string {
	t.Helper()
	findOnce.Do(find)
	if findErr != nil {
		t.Fatal(findErr)
	}
	return baseDSN
}

// SchemaDSN creates a fresh, empty schema, drops it in t.Cleanup, and returns a DSN whose
// search_path selects it: hand it to a subprocess, or open it yourself.
func SchemaDSN(t testing.TB) string {
	t.Helper()
	base := BaseDSN(t)
	schema := "t_" + randomHex(8)
	if _, err := adminDB.Exec(`CREATE SCHEMA ` + schema); err != nil {
		t.Fatalf("create test schema: %v", err)
	}
	t.Cleanup(func() {
		if _, err := adminDB.Exec(`DROP SCHEMA ` + schema + ` CASCADE`); err != nil {
			t.Errorf("drop test schema %s: %v", schema, err)
		}
	})
	return withSearchPath(t, base, schema)
}

// New returns a connection pool bound to a fresh schema (see SchemaDSN), closed in t.Cleanup
// before the schema is dropped. The schema is empty: apply the migrations the test needs.
func New(t testing.TB) *sqlx.DB {
	t.Helper()
	dsn := SchemaDSN(t)
	db, err := sqlx.Open("postgres", sqldb.PostgresDSN(dsn)) // as production opens it

	if err != nil {
		t.Fatalf("open test schema: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if err := db.PingContext(t.Context()); err != nil {
		t.Fatalf("connect to test schema: %v", err)
	}
	return db
}

func withSearchPath(t testing.TB, dsn, schema string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" {
		// key=value form: lib/pq sends unknown keys as run-time parameters.
		return dsn + " search_path=" + schema
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
