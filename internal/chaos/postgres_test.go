package chaos_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // PostgreSQL driver
)

// envPGBin names the directory of initdb and pg_ctl (scripts/postgres.sh exports it).
const envPGBin = "SAGAFLOW_TEST_PG_BIN"

// findPGBin returns the directory holding initdb and pg_ctl: $SAGAFLOW_TEST_PG_BIN, else where
// scripts/postgres.sh looks (the newest /usr/lib/postgresql/<version>/bin first), else $PATH.
func findPGBin() (string, error) {
	has := func(dir string) bool {
		for _, b := range []string{"initdb", "pg_ctl"} {
			if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
				return false
			}
		}
		return true
	}
	if dir := os.Getenv(envPGBin); dir != "" {
		if !has(dir) {
			return "", fmt.Errorf("%s=%s: no initdb and pg_ctl there", envPGBin, dir)
		}
		return dir, nil
	}
	versioned, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(versioned, func(a, b string) int { // newest major version first
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return vb - va
	})
	for _, dir := range append(versioned, "/usr/local/pgsql/bin", "/usr/local/bin", "/usr/bin") {
		if has(dir) {
			return dir, nil
		}
	}
	if p, err := exec.LookPath("pg_ctl"); err == nil && has(filepath.Dir(p)) {
		return filepath.Dir(p), nil
	}
	return "", fmt.Errorf("no initdb and pg_ctl in $%s, /usr/lib/postgresql/*/bin, /usr/local/pgsql/bin, /usr/local/bin, /usr/bin or $PATH: "+
		"install PostgreSQL's server binaries (scripts/test.sh installs Debian's postgresql package when they are missing)", envPGBin)
}

// postgres is a private PostgreSQL cluster in a test directory, on a free port of 127.0.0.1. Unlike
// the suite's throwaway cluster it runs with fsync on: surviving a crash is what it is here for.
type postgres struct {
	bin, data, logPath, sockDir string
	port                        int
	cred                        *syscall.Credential // who runs it (initdb refuses root)
}

// startPostgres creates and starts a cluster under dir; it is stopped in t.Cleanup.
func startPostgres(ctx context.Context, t *testing.T, dir string) *postgres {
	t.Helper()
	bin, err := findPGBin()
	if err != nil {
		t.Fatal(err)
	}
	port, err := freePort(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pg := &postgres{bin: bin, port: port, data: filepath.Join(dir, "pg", "data"), logPath: filepath.Join(dir, "pg", "server.log"),
		sockDir: filepath.Join(dir, "pg")}
	if err := os.MkdirAll(pg.sockDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		pg.cred, err = unprivileged()
		if err != nil {
			t.Fatal(err)
		}
		// The cluster's user must reach its directory: open the test's directories to it.
		for _, d := range []string{filepath.Dir(dir), dir} {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chown(pg.sockDir, int(pg.cred.Uid), int(pg.cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := pg.run(ctx, "initdb", "-D", pg.data, "-U", "postgres", "-A", "trust", "--no-sync"); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		// Immediate: the data directory is deleted with the test's anyway.
		_, _ = pg.run(context.WithoutCancel(ctx), "pg_ctl", "-D", pg.data, "-m", "immediate", "-w", "stop")
	})
	if err := pg.start(ctx); err != nil {
		t.Fatal(err)
	}
	return pg
}

// unprivileged returns the credentials of the postgres user, or of nobody.
func unprivileged() (*syscall.Credential, error) {
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 == nil && err2 == nil {
			return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
		}
	}
	return nil, fmt.Errorf("running as root, and neither user postgres nor nobody exists to run PostgreSQL as")
}

// run runs one of the cluster's binaries as the cluster's user and returns its output.
func (pg *postgres) run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(pg.bin, name), args...)
	cmd.Env = childEnv()
	if pg.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: pg.cred}
		cmd.Dir = pg.sockDir
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// start starts the server and waits until it accepts connections.
func (pg *postgres) start(ctx context.Context) error {
	opts := strings.Join([]string{
		"-c listen_addresses=127.0.0.1", "-c port=" + strconv.Itoa(pg.port), "-c unix_socket_directories=" + pg.sockDir,
		"-c max_connections=200", "-c fsync=on", "-c synchronous_commit=on", "-c full_page_writes=on",
	}, " ")
	if out, err := pg.run(ctx, "pg_ctl", "-D", pg.data, "-l", pg.logPath, "-w", "-t", "120", "-o", opts, "start"); err != nil {
		return fmt.Errorf("pg_ctl start: %w\n%s\nserver log:\n%s", err, out, tailFile(pg.logPath, 30))
	}
	return nil
}

// crash stops the server as a crash does: pg_ctl stop -m immediate (no checkpoint, every
// connection cut; the next start recovers from the WAL).
func (pg *postgres) crash(ctx context.Context) error {
	if out, err := pg.run(ctx, "pg_ctl", "-D", pg.data, "-m", "immediate", "-w", "stop"); err != nil {
		return fmt.Errorf("pg_ctl stop -m immediate: %w\n%s", err, out)
	}
	return nil
}

// dsn returns the URL of database db.
func (pg *postgres) dsn(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", pg.port, db)
}

// createDatabases creates the databases names.
func (pg *postgres) createDatabases(ctx context.Context, names ...string) error {
	db, err := pg.open(ctx, "postgres")
	if err != nil {
		return err
	}
	defer db.Close()
	for _, name := range names {
		if _, err := db.ExecContext(ctx, `CREATE DATABASE `+name); err != nil {
			return fmt.Errorf("create database %s: %w", name, err)
		}
	}
	return nil
}

// open opens a small pool on database name and checks that it answers.
func (pg *postgres) open(ctx context.Context, name string) (*sqlx.DB, error) {
	db, err := sqlx.Open("postgres", pg.dsn(name))
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", name, err)
	}
	db.SetMaxOpenConns(2)
	db.SetConnMaxIdleTime(10 * time.Second)
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("connect to database %s: %w", name, err)
	}
	return db, nil
}
