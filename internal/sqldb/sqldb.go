package sqldb

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	_ "modernc.org/sqlite" // registers the pure-Go "sqlite" driver
)

// Dialect names an SQL backend.
type Dialect string

const (
	// Postgres is PostgreSQL through lib/pq: production.
	Postgres Dialect = "postgres"
	// SQLite is the embedded development store (modernc.org/sqlite, no cgo).
	SQLite Dialect = "sqlite"
)

func init() {
	// sqlx does not know the modernc driver's name; it uses ? placeholders.
	sqlx.BindDriver("sqlite", sqlx.QUESTION)
}

// DialectOf reports the dialect of db from its driver name.
func DialectOf(db interface{ DriverName() string }) Dialect {
	if db.DriverName() == "sqlite" {
		return SQLite
	}
	return Postgres
}

// SQLitePragmas are the connection settings every SQLite handle of Sagaflow uses: WAL so readers
// run beside the single writer, a busy timeout instead of immediate SQLITE_BUSY, and IMMEDIATE
// transactions so a read-then-write transaction never fails on lock upgrade (see LIBRARY-NOTES §7).
const SQLitePragmas = "_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)&_txlock=immediate"

// Open connects to url and checks the connection. A url starting with "postgres://" or
// "postgresql://" (or a key=value DSN containing "host=") opens PostgreSQL; "sqlite:PATH" or a path
// ending in .db/.sqlite opens an SQLite file with SQLitePragmas.
func Open(ctx context.Context, url string) (*sqlx.DB, error) {
	driver, dsn, err := parseURL(url)
	if err != nil {
		return nil, err
	}
	db, err := sqlx.Open(driver, dsn)
	if err != nil {
		return nil, fmt.Errorf("open %s database: %w", driver, err)
	}
	if driver == "sqlite" {
		// One writer at a time is all SQLite allows; more open connections only queue on the
		// file lock. Readers in WAL mode still share the pool.
		db.SetMaxOpenConns(4)
	}
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("connect to %s database: %w", driver, err)
	}
	return db, nil
}

func parseURL(u string) (driver, dsn string, err error) {
	switch {
	case strings.HasPrefix(u, "postgres://"), strings.HasPrefix(u, "postgresql://"), strings.Contains(u, "host="):
		return "postgres", PostgresDSN(u), nil
	case strings.HasPrefix(u, "sqlite:"):
		return "sqlite", SQLiteDSN(strings.TrimPrefix(strings.TrimPrefix(u, "sqlite:"), "//")), nil
	case strings.HasSuffix(u, ".db"), strings.HasSuffix(u, ".sqlite"):
		return "sqlite", SQLiteDSN(u), nil
	default:
		return "", "", fmt.Errorf("database url %q: want postgres://… or sqlite:PATH", u)
	}
}

// PostgresDSN returns dsn (a URL or key=value DSN) with lib/pq's binary_parameters=yes unless it
// says otherwise: each parameterised statement then goes out in one round trip (Parse, Bind and
// Execute together) instead of two, which was a tenth of the orchestrator's CPU. []byte
// parameters then travel in binary, so JSON must be passed as a string (Sagaflow does; bytea
// columns take []byte either way).
func PostgresDSN(dsn string) string {
	if strings.Contains(dsn, "binary_parameters") {
		return dsn
	}
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		if strings.Contains(dsn, "?") {
			return dsn + "&binary_parameters=yes"
		}
		return dsn + "?binary_parameters=yes"
	}
	return dsn + " binary_parameters=yes"
}

// SQLiteDSN returns the modernc DSN for the database file at path with SQLitePragmas.
func SQLiteDSN(path string) string {
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	return "file:" + path + sep + SQLitePragmas
}

// Executor is what both *sqlx.DB and *sqlx.Tx offer for running queries.
type Executor interface {
	sqlx.ExtContext
	Rebind(query string) string
	DriverName() string
}

// InTx runs fn in a transaction on db: it commits when fn returns nil and rolls back when fn returns
// an error or panics (the panic is re-raised after the rollback). It is the one place that calls
// Begin.
func InTx(ctx context.Context, db *sqlx.DB, fn func(tx *sqlx.Tx) error) (err error) {
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	defer func() {
		if p := recover(); p != nil {
			_ = tx.Rollback()
			panic(p)
		}
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if err = fn(tx); err != nil {
		return err
	}
	if err = tx.Commit(); err != nil {
		return fmt.Errorf("commit transaction: %w", err)
	}
	return nil
}

// ErrDuplicate is returned by IsUnique-translated writes when a unique key already exists.
var ErrDuplicate = errors.New("duplicate key")

// IsUniqueViolation reports whether err is a unique-key violation on either backend.
func IsUniqueViolation(err error) bool {
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		return pqErr.Code == "23505"
	}
	// modernc reports SQLITE_CONSTRAINT_UNIQUE / PRIMARYKEY in the message text; its error type
	// lives in an internal-looking package, so match the stable text it prints.
	msg := err.Error()
	return strings.Contains(msg, "UNIQUE constraint failed") || strings.Contains(msg, "constraint failed: PRIMARY KEY")
}

// IsSerializationFailure reports whether err is a transient conflict that a retry of the whole
// transaction may resolve (PostgreSQL serialization failure or deadlock, SQLite busy/locked).
func IsSerializationFailure(err error) bool {
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		return pqErr.Code == "40001" || pqErr.Code == "40P01"
	}
	msg := err.Error()
	return strings.Contains(msg, "SQLITE_BUSY") || strings.Contains(msg, "database is locked")
}

// Redact returns url with any password replaced by "xxxxx", for logs and errors.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

var _ Executor = (*sqlx.DB)(nil)
var _ Executor = (*sqlx.Tx)(nil)
