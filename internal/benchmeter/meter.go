package benchmeter

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go/jetstream"
)

// Config says what a Meter measures.
type Config struct {
	// Stats is a connection pool to the PostgreSQL server that holds Database, connected to another
	// database (its own queries would count otherwise). One connection is enough. Required.
	Stats *sqlx.DB
	// Database is the measured database: its client backends' CPU and its transactions. Nothing
	// but the measured system should use it. Required.
	Database string
	// JetStream is the bus whose streams' stored messages are counted. Required.
	JetStream jetstream.JetStream
	// SettleInterval is how long Start waits between two readings of the statistics while they
	// settle, and how often Finish looks for the backends to have exited (a tenth of it). Default
	// 1.1s: PostgreSQL backends publish their counters at most once a second.
	SettleInterval time.Duration
	// SettleTimeout bounds each of those waits. Default 15s.
	SettleTimeout time.Duration
}

func (c Config) withDefaults() Config {
	if c.SettleInterval <= 0 {
		c.SettleInterval = 1100 * time.Millisecond
	}
	if c.SettleTimeout <= 0 {
		c.SettleTimeout = 15 * time.Second
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	if c.Stats == nil {
		errs = append(errs, errors.New("benchmeter config: Stats is required"))
	}
	if c.Database == "" {
		errs = append(errs, errors.New("benchmeter config: Database is required"))
	}
	if c.JetStream == nil {
		errs = append(errs, errors.New("benchmeter config: JetStream is required"))
	}
	return errors.Join(errs...)
}

// Figures is what a measured stretch of work cost, in total and per saga (per-saga figures are 0
// when no saga finished). JSON names are those of "sagaflow bench saga".
type Figures struct {
	// GoCPUMS is this process's CPU time in milliseconds; GoCPUMSPerSaga per saga.
	GoCPUMS        float64 `json:"go_cpu_ms"`
	GoCPUMSPerSaga float64 `json:"go_cpu_ms_per_saga"`
	// PGCPUMS is the measured database's backends' CPU time in milliseconds; nil when it could not
	// be measured (PGCPUNote says why).
	PGCPUMS        *float64 `json:"pg_cpu_ms"`
	PGCPUMSPerSaga *float64 `json:"pg_cpu_ms_per_saga"`
	// CPUMSPerSaga is GoCPUMSPerSaga + PGCPUMSPerSaga; nil with PGCPUMSPerSaga.
	CPUMSPerSaga *float64 `json:"cpu_ms_per_saga"`
	// PGCPUNote says why the backends' CPU is missing; empty when it is there.
	PGCPUNote string `json:"pg_cpu_note,omitempty"`
	// PGBackends is how many client backends served the database when Stop was called.
	PGBackends int `json:"pg_backends"`
	// PGXact is the transactions committed in the database (xact_commit), PGRollbacks those
	// rolled back (xact_rollback); and each per saga.
	PGXact             int64   `json:"pg_xact"`
	PGXactPerSaga      float64 `json:"pg_xact_per_saga"`
	PGRollbacks        int64   `json:"pg_rollbacks"`
	PGRollbacksPerSaga float64 `json:"pg_rollbacks_per_saga"`
	// PGStatsNote says why the transaction counts may be incomplete; empty when they are exact.
	PGStatsNote string `json:"pg_stats_note,omitempty"`
	// JSPublishes is the messages JetStream stored; JSPublishesPerSaga per saga.
	JSPublishes        uint64  `json:"js_publishes"`
	JSPublishesPerSaga float64 `json:"js_publishes_per_saga"`
}

// Meter measures one stretch of work: Start, Stop, Finish, in that order, once. It is not safe for
// concurrent use.
type Meter struct {
	cfg Config

	start, stop reading
	startStats  dbStats
}

// reading is what Start and Stop read.
type reading struct {
	process   time.Duration
	backends  map[int]time.Duration // pid → CPU
	pgErr     error                 // why backends is incomplete
	published uint64
}

// dbStats is the measured database's row of pg_stat_database.
type dbStats struct {
	Commits   int64 `db:"xact_commit"`
	Rollbacks int64 `db:"xact_rollback"`
	Sessions  int64 `db:"sessions"`
	Backends  int   `db:"backends"`
}

// New returns a Meter for cfg; it reads nothing yet.
func New(cfg Config) (*Meter, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Meter{cfg: cfg}, nil
}

// Start waits for the database's statistics to settle (see Finish), then reads the counters, the
// CPU time of this process and of every backend, and the streams' sequence numbers. It returns an
// error when the statistics or the streams cannot be read; a backend whose CPU cannot be read is
// not an error (the figures carry a note instead).
func (m *Meter) Start(ctx context.Context) error {
	// Counters read right after some work may miss its last second: a PostgreSQL (15+) backend
	// publishes its pending counters to shared memory when it goes idle, at most once a second
	// (PGSTAT_MIN_INTERVAL), so they lag by up to about a second. pg_stat_force_next_flush() only
	// hurries the calling backend, which is not one of the measured ones, and
	// pg_stat_clear_snapshot() is not needed: every reading here is a transaction of its own, so
	// no snapshot cached by stats_fetch_consistency outlives it. So Start reads the counters a
	// SettleInterval apart until two readings agree: same backends, same sessions, and no more new
	// transactions than there are backends (idle pollers commit about one a second each).
	prev, err := m.dbStats(ctx)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(m.cfg.SettleTimeout)
	for {
		if err := sleep(ctx, m.cfg.SettleInterval); err != nil {
			return err
		}
		cur, err := m.dbStats(ctx)
		if err != nil {
			return err
		}
		settled := cur.Sessions == prev.Sessions && cur.Backends == prev.Backends &&
			cur.Commits+cur.Rollbacks-prev.Commits-prev.Rollbacks <= int64(cur.Backends)
		prev = cur
		if settled || time.Now().After(deadline) {
			break
		}
	}
	m.startStats = prev
	m.start, err = m.read(ctx)
	return err
}

// Stop reads the CPU time of this process and of every backend, and the streams' sequence
// numbers. Call it when the work is done and before the backends go away.
func (m *Meter) Stop(ctx context.Context) error {
	var err error
	m.stop, err = m.read(ctx)
	return err
}

// Finish waits until no backend is connected to the database any more (close every pool and
// listener first), reads the transaction counters, and returns the figures of the work between
// Start and Stop, per saga for sagas sagas. The transaction counts are exact: a backend publishes
// its last counters as it exits, before it leaves pg_stat_activity; they include what ran between
// Stop and the last backend's exit (the shutdown), and the idle pollers' transactions between the
// Start reading and the work. If a backend is still connected after SettleTimeout, the counts are
// read anyway and PGStatsNote says so.
func (m *Meter) Finish(ctx context.Context, sagas int) (Figures, error) {
	var end dbStats
	deadline := time.Now().Add(m.cfg.SettleTimeout)
	for {
		var err error
		if end, err = m.dbStats(ctx); err != nil {
			return Figures{}, err
		}
		if end.Backends == 0 || time.Now().After(deadline) {
			break
		}
		if err := sleep(ctx, m.cfg.SettleInterval/10); err != nil {
			return Figures{}, err
		}
	}
	f := Figures{
		GoCPUMS:     ms(m.stop.process - m.start.process),
		PGBackends:  len(m.stop.backends),
		PGXact:      end.Commits - m.startStats.Commits,
		PGRollbacks: end.Rollbacks - m.startStats.Rollbacks,
		JSPublishes: m.stop.published - m.start.published,
	}
	if end.Backends > 0 {
		f.PGStatsNote = fmt.Sprintf("%d backend(s) still connected %s after the work; their last second of transactions may be missing",
			end.Backends, m.cfg.SettleTimeout)
	}
	pg, note := m.backendCPU(end.Sessions - m.startStats.Sessions)
	if note != "" {
		f.PGCPUNote = note
	} else {
		f.PGCPUMS = &pg
	}
	if sagas > 0 {
		n := float64(sagas)
		f.GoCPUMSPerSaga = round2(f.GoCPUMS / n)
		f.PGXactPerSaga = round2(float64(f.PGXact) / n)
		f.PGRollbacksPerSaga = round2(float64(f.PGRollbacks) / n)
		f.JSPublishesPerSaga = round2(float64(f.JSPublishes) / n)
		if f.PGCPUMS != nil {
			per, total := round2(*f.PGCPUMS/n), round2(f.GoCPUMSPerSaga+*f.PGCPUMS/n)
			f.PGCPUMSPerSaga, f.CPUMSPerSaga = &per, &total
		}
	}
	return f, nil
}

// backendCPU sums the backends' CPU between Start and Stop, or says why it cannot: a backend was
// unreadable, or one exited during the work (sessions is how many were established since Start).
func (m *Meter) backendCPU(sessions int64) (float64, string) {
	for _, r := range []reading{m.start, m.stop} {
		if r.pgErr != nil {
			return 0, fmt.Sprintf("PostgreSQL backends' CPU not measured: %v", r.pgErr)
		}
	}
	var total time.Duration
	var exited, started int64
	for pid, before := range m.start.backends {
		after, ok := m.stop.backends[pid]
		if !ok {
			exited++
			continue
		}
		total += after - before
	}
	for pid, after := range m.stop.backends {
		if _, ok := m.start.backends[pid]; !ok {
			started++
			total += after
		}
	}
	exited += max(0, sessions-started) // started after Start and gone before Stop, or after it
	if exited > 0 {
		return 0, fmt.Sprintf("PostgreSQL backends' CPU not measured: %d backend(s) exited during the work and took their CPU time with them", exited)
	}
	return ms(total), ""
}

// read reads the CPU times and the streams' sequence numbers.
func (m *Meter) read(ctx context.Context) (reading, error) {
	var r reading
	var pids []int
	const q = `SELECT pid FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'`
	if err := m.cfg.Stats.SelectContext(ctx, &pids, q, m.cfg.Database); err != nil {
		return r, fmt.Errorf("list backends of %s: %w", m.cfg.Database, err)
	}
	r.backends = make(map[int]time.Duration, len(pids))
	for _, pid := range pids {
		cpu, err := BackendCPU(pid, m.cfg.Database)
		if err != nil {
			r.pgErr = err
			break
		}
		r.backends[pid] = cpu
	}
	var err error
	if r.process, err = ProcessCPU(); err != nil {
		return r, err
	}
	if r.published, err = Published(ctx, m.cfg.JetStream); err != nil {
		return r, err
	}
	return r, nil
}

// dbStats reads the database's counters and how many client backends it has.
func (m *Meter) dbStats(ctx context.Context) (dbStats, error) {
	const q = `SELECT COALESCE(d.xact_commit, 0) AS xact_commit, COALESCE(d.xact_rollback, 0) AS xact_rollback,
	COALESCE(d.sessions, 0) AS sessions,
	(SELECT count(*) FROM pg_stat_activity a WHERE a.datname = d.datname AND a.backend_type = 'client backend') AS backends
FROM pg_stat_database d WHERE d.datname = $1`
	var s dbStats
	if err := m.cfg.Stats.GetContext(ctx, &s, q, m.cfg.Database); err != nil {
		return s, fmt.Errorf("read statistics of database %s: %w", m.cfg.Database, err)
	}
	return s, nil
}

// Published returns how many messages the streams of js have stored so far: the sum of their last
// sequence numbers.
func Published(ctx context.Context, js jetstream.JetStream) (uint64, error) {
	var n uint64
	streams := js.ListStreams(ctx)
	for info := range streams.Info() {
		n += info.State.LastSeq
	}
	if err := streams.Err(); err != nil {
		return 0, fmt.Errorf("list streams: %w", err)
	}
	return n, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}

func ms(d time.Duration) float64 { return round2(float64(d) / float64(time.Millisecond)) }

func round2(x float64) float64 { return math.Round(x*100) / 100 }
