// Package migrate applies the SQL migrations that Sagaflow's packages embed beside their code.
//
// Each component (outbox, engine, participant, …) keeps forward-only files named
// NNNN_short_name.sql in its own migrations/ directory and embeds them with one go:embed glob. A
// file may come in dialect variants, NNNN_short_name.postgres.sql and NNNN_short_name.sqlite.sql,
// when the two backends need different DDL; a plain .sql file serves both.
//
// Apply runs every file not yet recorded, in version order, each in its own transaction, and records
// it in the sagaflow_migrations table keyed by (component, version). On PostgreSQL the run holds an
// advisory lock (scoped to the current schema) so replicas starting together apply each file once.
//
// Why not a migration library: golang-migrate and goose both want one linear history per database,
// while Sagaflow's components are versioned independently and the participant's tables live in the
// service's own database next to its tables. The part we need is this file.
package migrate

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/sagaflow/sagaflow/internal/sqldb"
)

// File is one migration of a component.
type File struct {
	Version int
	Name    string
	SQL     string
}

var fileRE = regexp.MustCompile(`^(\d{4})_([a-z0-9_]+?)(?:\.(postgres|sqlite))?\.sql$`)

// Files lists the migrations in fsys (searched recursively) that apply to dialect, in version order.
// It fails on a gap or a duplicate in the numbering, so a missing file is caught at build time by
// the component's tests rather than in production.
func Files(fsys fs.FS, dialect sqldb.Dialect) ([]File, error) {
	byVersion := map[int]File{}
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		m := fileRE.FindStringSubmatch(path.Base(p))
		if m == nil {
			if strings.HasSuffix(p, ".sql") {
				return fmt.Errorf("migration %s: name must be NNNN_name[.postgres|.sqlite].sql", p)
			}
			return nil
		}
		v, _ := strconv.Atoi(m[1])
		if m[3] != "" && m[3] != string(dialect) {
			return nil
		}
		body, err := fs.ReadFile(fsys, p)
		if err != nil {
			return fmt.Errorf("read migration %s: %w", p, err)
		}
		if prev, ok := byVersion[v]; ok {
			return fmt.Errorf("migration %s: version %04d also used by %s", p, v, prev.Name)
		}
		byVersion[v] = File{Version: v, Name: path.Base(p), SQL: string(body)}
		return nil
	})
	if err != nil {
		return nil, err
	}
	files := make([]File, 0, len(byVersion))
	for _, f := range byVersion {
		files = append(files, f)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Version < files[j].Version })
	for i, f := range files {
		if f.Version != i+1 {
			return nil, fmt.Errorf("migration %s: expected version %04d (numbering must start at 0001 and have no gaps)", f.Name, i+1)
		}
	}
	return files, nil
}

const createTable = `CREATE TABLE IF NOT EXISTS sagaflow_migrations (
	component  TEXT NOT NULL,
	version    INTEGER NOT NULL,
	name       TEXT NOT NULL,
	applied_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
	PRIMARY KEY (component, version)
)`

// Apply applies the migrations of component found in fsys that db has not recorded yet. It returns
// the number of files applied.
func Apply(ctx context.Context, db *sqlx.DB, component string, fsys fs.FS) (int, error) {
	dialect := sqldb.DialectOf(db)
	files, err := Files(fsys, dialect)
	if err != nil {
		return 0, fmt.Errorf("migrate %s: %w", component, err)
	}
	conn, err := db.Connx(ctx)
	if err != nil {
		return 0, fmt.Errorf("migrate %s: %w", component, err)
	}
	defer conn.Close()
	if dialect == sqldb.Postgres {
		// Session-scoped lock on this dedicated connection, keyed by schema so parallel test
		// schemas (and tenants) do not queue behind each other.
		if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock(hashtext('sagaflow_migrate:' || current_schema()))`); err != nil {
			return 0, fmt.Errorf("migrate %s: take advisory lock: %w", component, err)
		}
		defer func() {
			_, _ = conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(hashtext('sagaflow_migrate:' || current_schema()))`)
		}()
	}
	if _, err := conn.ExecContext(ctx, createTable); err != nil {
		return 0, fmt.Errorf("migrate %s: create migrations table: %w", component, err)
	}
	var applied []int
	if err := sqlx.SelectContext(ctx, conn, &applied, db.Rebind(`SELECT version FROM sagaflow_migrations WHERE component = ?`), component); err != nil {
		return 0, fmt.Errorf("migrate %s: read applied versions: %w", component, err)
	}
	done := map[int]bool{}
	for _, v := range applied {
		done[v] = true
	}
	n := 0
	for _, f := range files {
		if done[f.Version] {
			continue
		}
		if err := applyOne(ctx, conn, db, component, f); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

func applyOne(ctx context.Context, conn *sqlx.Conn, db *sqlx.DB, component string, f File) (err error) {
	tx, err := conn.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate %s %s: begin: %w", component, f.Name, err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if _, err = tx.ExecContext(ctx, f.SQL); err != nil {
		return fmt.Errorf("migrate %s %s: %w", component, f.Name, err)
	}
	if _, err = tx.ExecContext(ctx, db.Rebind(`INSERT INTO sagaflow_migrations (component, version, name) VALUES (?, ?, ?)`), component, f.Version, f.Name); err != nil {
		return fmt.Errorf("migrate %s %s: record: %w", component, f.Name, err)
	}
	if err = tx.Commit(); err != nil {
		return fmt.Errorf("migrate %s %s: commit: %w", component, f.Name, err)
	}
	return nil
}

// Pending returns the migrations of component in fsys that db has not recorded, in version order,
// changing nothing: a role that may only read and write rows (no DDL) can call it, so a process
// started without migrating can refuse to run on an outdated schema. A database without the
// migrations table has every migration pending.
func Pending(ctx context.Context, db *sqlx.DB, component string, fsys fs.FS) ([]File, error) {
	files, err := Files(fsys, sqldb.DialectOf(db))
	if err != nil {
		return nil, fmt.Errorf("migrations of %s: %w", component, err)
	}
	var applied []int
	err = db.SelectContext(ctx, &applied, db.Rebind(`SELECT version FROM sagaflow_migrations WHERE component = ?`), component)
	if err != nil && !missingTable(err) {
		return nil, fmt.Errorf("migrations of %s: read applied versions: %w", component, err)
	}
	done := map[int]bool{}
	for _, v := range applied {
		done[v] = true
	}
	var pending []File
	for _, f := range files {
		if !done[f.Version] {
			pending = append(pending, f)
		}
	}
	return pending, nil
}

// missingTable reports whether err says the migrations table does not exist (PostgreSQL's
// undefined_table, SQLite's "no such table").
func missingTable(err error) bool {
	if pqErr, ok := errors.AsType[*pq.Error](err); ok {
		return pqErr.Code == "42P01"
	}
	return strings.Contains(err.Error(), "no such table")
}

// Check returns nil when every migration of each component is recorded in db, and otherwise an
// error naming the pending files (component/NNNN_name.sql) and the command that applies them.
func Check(ctx context.Context, db *sqlx.DB, components map[string]fs.FS) error {
	var pending []string
	names := make([]string, 0, len(components))
	for c := range components {
		names = append(names, c)
	}
	sort.Strings(names)
	for _, c := range names {
		files, err := Pending(ctx, db, c, components[c])
		if err != nil {
			return err
		}
		for _, f := range files {
			pending = append(pending, fmt.Sprintf("%s/%04d_%s.sql", c, f.Version, f.Name))
		}
	}
	if len(pending) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s; apply them with \"sagaflow migrate\" (or the package's Migrate) as a role that owns the schema",
		ErrPending, strings.Join(pending, ", "))
}

// ErrPending is matched by Check's error: the database schema is behind the code.
var ErrPending = errors.New("database migrations pending")
