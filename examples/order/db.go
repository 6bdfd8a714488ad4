package order

import (
	"context"
	"fmt"
	"strings"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"  // PostgreSQL: the production store
	_ "modernc.org/sqlite" // SQLite, pure Go: the embedded store of the example
)

// OpenDB opens a service's own database: "postgres://…" (lib/pq) or "sqlite:PATH" (modernc.org/
// sqlite, with WAL, a busy timeout and IMMEDIATE transactions, which Sagaflow needs on SQLite:
// readers beside the single writer, and no lock-upgrade failures in read-then-write transactions).
// It is what any service outside this repository writes for itself; the participant detects the
// dialect from the driver.
func OpenDB(ctx context.Context, url string) (*sqlx.DB, error) {
	driver, dsn := "postgres", url
	if path, ok := strings.CutPrefix(url, "sqlite:"); ok {
		driver, dsn = "sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate"
	} else if !strings.HasPrefix(url, "postgres://") && !strings.HasPrefix(url, "postgresql://") {
		return nil, fmt.Errorf("database url %q: want postgres://… or sqlite:PATH", url)
	}
	db, err := sqlx.Open(driver, dsn)
	if err != nil {
		return nil, fmt.Errorf("open %s database: %w", driver, err)
	}
	if driver == "sqlite" {
		db.SetMaxOpenConns(4) // one writer at a time is all SQLite allows
	}
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("connect to %s database: %w", driver, err)
	}
	return db, nil
}
