package benchmeter

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/internal/natstest"
	"github.com/sagaflow/sagaflow/internal/pgtest"
)

func TestParseStat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		line     string
		wantComm string
		wantCPU  time.Duration
		wantErr  bool
	}{
		{"Backend", "2207 (postgres) S 2206 2207 2207 0 -1 4194368 141 0 0 0 7 3 0 0 20 0 1 0 3233", "postgres", 100 * time.Millisecond, false},
		{"CommWithSpacesAndParens", "42 (a (b) c) R 1 42 42 0 -1 0 0 0 0 0 150 50 0 0 20 0 1 0 1", "a (b) c", 2 * time.Second, false},
		{"Truncated", "42 (x) R 1 42", "", 0, true},
		{"NotANumber", "42 (x) R 1 42 42 0 -1 0 0 0 0 0 x 50 0", "", 0, true},
		{"NoComm", "42 x R", "", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			comm, cpu, err := parseStat([]byte(tt.line))
			if tt.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.wantComm, comm)
			require.Equal(t, tt.wantCPU, cpu)
		})
	}
}

func TestBackendCPU(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	ctx := t.Context()
	var b struct {
		PID      int    `db:"pid"`
		Database string `db:"db"`
	}
	require.NoError(t, db.GetContext(ctx, &b, `SELECT pg_backend_pid() AS pid, current_database() AS db`))

	_, err := BackendCPU(b.PID, b.Database)
	require.NoError(t, err, "the test database runs on this machine")
	_, err = BackendCPU(b.PID, "another_database")
	require.ErrorIs(t, err, ErrNotBackend, "the title names the backend's database")
	_, err = BackendCPU(os.Getpid(), b.Database)
	require.ErrorIs(t, err, ErrNotBackend, "the test binary is no PostgreSQL backend")
}

func TestProcessCPU(t *testing.T) {
	t.Parallel()
	before, err := ProcessCPU()
	require.NoError(t, err)
	sum := 0
	for i := range 50_000_000 {
		sum += i % 7
	}
	after, err := ProcessCPU()
	require.NoError(t, err)
	require.Positive(t, sum)
	require.Greater(t, after, before)
}

// measured is a database of its own for a Meter, with a stream to publish to.
type measured struct {
	stats *sqlx.DB // connected to the base database
	db    *sqlx.DB // a pool on the measured database
	dsn   string
	name  string
	js    jetstream.JetStream
	meter *Meter
}

func setup(t *testing.T) *measured {
	t.Helper()
	ctx := t.Context()
	base := pgtest.BaseDSN(t)
	stats, err := sqlx.Open("postgres", base)
	require.NoError(t, err)
	t.Cleanup(func() { _ = stats.Close() })
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	m := &measured{stats: stats, name: "benchmeter_test_" + hex.EncodeToString(b)}
	_, err = stats.ExecContext(ctx, `CREATE DATABASE `+m.name+` TEMPLATE template0`)
	require.NoError(t, err)
	t.Cleanup(func() {
		_, err := stats.ExecContext(context.WithoutCancel(ctx), `DROP DATABASE IF EXISTS `+m.name+` WITH (FORCE)`)
		require.NoError(t, err)
	})
	u, err := url.Parse(base)
	require.NoError(t, err)
	require.NotEmpty(t, u.Scheme, "the test server's DSN is a URL")
	u.Path = "/" + m.name
	m.dsn = u.String()
	m.db, err = sqlx.Open("postgres", m.dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = m.db.Close() })
	m.db.SetMaxOpenConns(3)
	m.db.SetMaxIdleConns(3)
	require.NoError(t, m.db.PingContext(ctx))

	m.js = natstest.New(t, nil).JetStream(t)
	_, err = m.js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Storage: jetstream.FileStorage})
	require.NoError(t, err)
	m.meter, err = New(Config{Stats: stats, Database: m.name, JetStream: m.js, SettleInterval: 300 * time.Millisecond})
	require.NoError(t, err)
	return m
}

func TestMeter(t *testing.T) {
	t.Parallel()

	t.Run("CountsWhatTheWorkDid", func(t *testing.T) {
		t.Parallel()
		m := setup(t)
		ctx := t.Context()
		require.NoError(t, m.meter.Start(ctx))
		for range 50 {
			_, err := m.db.ExecContext(ctx, `SELECT count(*) FROM generate_series(1, 20000)`)
			require.NoError(t, err)
		}
		for range 3 {
			_, err := m.js.Publish(ctx, "t.x", []byte("m"))
			require.NoError(t, err)
		}
		require.NoError(t, m.meter.Stop(ctx))
		require.NoError(t, m.db.Close())
		f, err := m.meter.Finish(ctx, 5)
		require.NoError(t, err)
		t.Logf("figures: %+v", f)
		require.GreaterOrEqual(t, f.PGXact, int64(50), "every statement is a transaction")
		require.Less(t, f.PGXact, int64(60), "the meter's own queries do not count")
		require.InDelta(t, float64(f.PGXact)/5, f.PGXactPerSaga, 0.01)
		require.Equal(t, uint64(3), f.JSPublishes)
		require.InDelta(t, 0.6, f.JSPublishesPerSaga, 0.001)
		require.Empty(t, f.PGCPUNote)
		require.NotNil(t, f.PGCPUMS)
		require.Positive(t, *f.PGCPUMS, "50 scans of 20,000 rows take some CPU")
		require.Positive(t, f.GoCPUMS)
		require.InDelta(t, f.GoCPUMSPerSaga+*f.PGCPUMSPerSaga, *f.CPUMSPerSaga, 0.02)
		require.Positive(t, f.PGBackends)
		require.Empty(t, f.PGStatsNote)
	})

	t.Run("NoBackendCPUWhenABackendExited", func(t *testing.T) {
		t.Parallel()
		m := setup(t)
		ctx := t.Context()
		require.NoError(t, m.meter.Start(ctx))
		// A connection opened and closed during the work: its CPU is gone with it.
		other, err := sqlx.Open("postgres", m.dsn)
		require.NoError(t, err)
		var pid int
		require.NoError(t, other.GetContext(ctx, &pid, `SELECT pg_backend_pid()`))
		require.NoError(t, other.Close())
		require.Eventually(t, func() bool { // the backend exits after the client has gone
			var n int
			err := m.stats.GetContext(ctx, &n, `SELECT count(*) FROM pg_stat_activity WHERE pid = $1`, pid)
			return err == nil && n == 0
		}, 30*time.Second, 10*time.Millisecond)
		require.NoError(t, m.meter.Stop(ctx))
		require.NoError(t, m.db.Close())
		f, err := m.meter.Finish(ctx, 1)
		require.NoError(t, err)
		require.Nil(t, f.PGCPUMS)
		require.Nil(t, f.CPUMSPerSaga)
		require.Contains(t, f.PGCPUNote, "1 backend(s) exited during the work")
	})
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	_, err := New(Config{})
	for _, want := range []string{"Stats", "Database", "JetStream"} {
		require.ErrorContains(t, err, want)
	}
}
