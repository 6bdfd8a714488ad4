// Package pgschema finds a PostgreSQL server and gives a program (the benchmarks) throwaway
// schemas on it, the way the test suite does: the server given, else SAGAFLOW_TEST_POSTGRES, else
// 127.0.0.1:5432. scripts/with-postgres.sh starts a private server when none answers.
package pgschema

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // PostgreSQL driver
)

// EnvDSN is the variable the test command sets to the server it found or started.
const EnvDSN = "SAGAFLOW_TEST_POSTGRES"

const localDSN = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// Find returns dsn when it is set, else $SAGAFLOW_TEST_POSTGRES, else the local server, after
// checking that it answers.
func Find(ctx context.Context, dsn string) (string, error) {
	if dsn == "" {
		dsn = os.Getenv(EnvDSN)
	}
	if dsn == "" {
		dsn = localDSN
	}
	db, err := sqlx.Open("postgres", dsn)
	if err != nil {
		return "", fmt.Errorf("postgres %s: %w", dsn, err)
	}
	defer db.Close()
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		return "", fmt.Errorf("no PostgreSQL answers at %s (give --postgres DSN, or run under scripts/with-postgres.sh): %w", dsn, err)
	}
	return dsn, nil
}

// Create makes a fresh schema named prefix_<random> on the server at base and returns a DSN that
// selects it, and a function that drops it.
func Create(ctx context.Context, base, prefix string) (string, func(context.Context) error, error) {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	schema := prefix + "_" + hex.EncodeToString(b)
	db, err := sqlx.Open("postgres", base)
	if err != nil {
		return "", nil, err
	}
	if _, err := db.ExecContext(ctx, `CREATE SCHEMA `+schema); err != nil {
		_ = db.Close()
		return "", nil, fmt.Errorf("create schema %s: %w", schema, err)
	}
	drop := func(ctx context.Context) error {
		defer db.Close()
		_, err := db.ExecContext(ctx, `DROP SCHEMA `+schema+` CASCADE`)
		return err
	}
	u, err := url.Parse(base)
	if err != nil || u.Scheme == "" {
		return base + " search_path=" + schema, drop, nil
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String(), drop, nil
}
