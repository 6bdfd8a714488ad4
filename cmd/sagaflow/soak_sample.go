package main

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sagaflow/sagaflow/internal/benchmeter"
)

// soakPoint is one value of one series at one sample.
type soakPoint struct {
	series string
	value  float64
}

// soakSampler reads, at each interval, every figure the soak follows.
type soakSampler struct {
	admin      *sqlx.DB            // the server's own database: pg_stat_activity, database sizes
	components []string            // orchestrator, then the services
	databases  map[string]string   // component → its database
	dbs        map[string]*sqlx.DB // component → a one-connection pool on its database
	procs      map[string]int      // process name → pid (serve, the services, and "soak": this one)
	procOrder  []string
	js         jetstream.JetStream
	streams    []string
	tracker    *soakTracker

	prevCPU map[string]time.Duration
	prevAt  time.Time
}

// soakAppPrefix is the application_name prefix of the soak's own PostgreSQL connections, which
// the connection counts leave out.
const soakAppPrefix = "sagaflow-soak-"

// start reads the processes' CPU once, so that the first sample has a base.
func (s *soakSampler) start() {
	s.prevCPU = map[string]time.Duration{}
	for name, pid := range s.procs {
		if p, err := benchmeter.ReadProc(pid); err == nil {
			s.prevCPU[name] = p.CPU
		}
	}
	s.prevAt = time.Now()
}

// sample reads every series now. A process that cannot be read (it died) is reported as an error.
func (s *soakSampler) sample(ctx context.Context) ([]soakPoint, error) {
	l := s.tracker.take()
	pts := []soakPoint{
		{"started", float64(l.started)}, {"finished", float64(l.finished)}, {"in_flight", float64(l.inFlight)},
		{"late", float64(l.late)}, {"errors", float64(l.errors)}, {"p50_ms", l.p50}, {"p99_ms", l.p99},
	}
	now := time.Now()
	wall := now.Sub(s.prevAt)
	s.prevAt = now
	for _, name := range s.procOrder {
		p, err := benchmeter.ReadProc(s.procs[name])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		cpu := 100 * float64(p.CPU-s.prevCPU[name]) / float64(wall)
		s.prevCPU[name] = p.CPU
		pts = append(pts, soakPoint{"proc." + name + ".rss_mb", float64(p.RSS) / (1 << 20)},
			soakPoint{"proc." + name + ".fds", float64(p.OpenFiles)}, soakPoint{"proc." + name + ".cpu_pct", cpu})
	}
	pg, err := s.samplePostgres(ctx)
	if err != nil {
		return nil, err
	}
	pts = append(pts, pg...)
	for _, name := range s.streams {
		st, err := s.js.Stream(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", name, err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", name, err)
		}
		pts = append(pts, soakPoint{"js." + name + ".msgs", float64(info.State.Msgs)},
			soakPoint{"js." + name + ".kb", float64(info.State.Bytes) / 1024})
	}
	return pts, nil
}

// samplePostgres reads the connections and size of each component's database and the row count
// of each of its tables.
func (s *soakSampler) samplePostgres(ctx context.Context) ([]soakPoint, error) {
	names := make([]string, 0, len(s.components))
	for _, c := range s.components {
		names = append(names, s.databases[c])
	}
	var conns []struct {
		DB string `db:"datname"`
		N  int    `db:"n"`
	}
	if err := s.admin.SelectContext(ctx, &conns, `SELECT datname, count(*) AS n FROM pg_stat_activity
		WHERE datname = ANY($1) AND application_name NOT LIKE $2 GROUP BY datname`, pq.Array(names), soakAppPrefix+"%"); err != nil {
		return nil, fmt.Errorf("read connections: %w", err)
	}
	byDB := map[string]int{}
	for _, c := range conns {
		byDB[c.DB] = c.N
	}
	var pts []soakPoint
	for _, c := range s.components {
		pts = append(pts, soakPoint{"pg." + c + ".conns", float64(byDB[s.databases[c]])})
	}
	for _, c := range s.components {
		var size int64
		if err := s.admin.GetContext(ctx, &size, `SELECT pg_database_size($1)`, s.databases[c]); err != nil {
			return nil, fmt.Errorf("read the size of %s: %w", s.databases[c], err)
		}
		pts = append(pts, soakPoint{"pg." + c + ".mb", float64(size) / (1 << 20)})
	}
	for _, c := range s.components {
		rows, err := tableRows(ctx, s.dbs[c])
		if err != nil {
			return nil, fmt.Errorf("%s database: %w", c, err)
		}
		for _, r := range rows {
			pts = append(pts, soakPoint{"rows." + c + "." + r.series, r.value})
		}
	}
	return pts, nil
}

// tableRows counts the rows of every table of db's current schema but the migration records.
func tableRows(ctx context.Context, db *sqlx.DB) ([]soakPoint, error) {
	var tables []string
	if err := db.SelectContext(ctx, &tables, `SELECT tablename FROM pg_tables WHERE schemaname = current_schema()
		AND tablename NOT LIKE '%migration%' ORDER BY tablename`); err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	pts := make([]soakPoint, 0, len(tables))
	for _, t := range tables {
		var n int64
		if err := db.GetContext(ctx, &n, `SELECT count(*) FROM `+pq.QuoteIdentifier(t)); err != nil {
			return nil, fmt.Errorf("count %s: %w", t, err)
		}
		pts = append(pts, soakPoint{t, float64(n)})
	}
	return pts, nil
}

// printSoakSample prints one sample as a block of lines, each starting with the elapsed time.
func printSoakSample(w io.Writer, elapsed time.Duration, pts []soakPoint) {
	at := fmt.Sprintf("[%s]", fmtElapsed(elapsed))
	groups := []struct{ title, prefix string }{
		{"load", ""}, {"procs", "proc."}, {"postgres", "pg."}, {"rows", "rows."}, {"jetstream", "js."},
	}
	for _, g := range groups {
		var parts []string
		for _, p := range pts {
			inGroup := strings.HasPrefix(p.series, g.prefix)
			if g.prefix == "" {
				inGroup = !strings.Contains(p.series, ".")
			}
			if inGroup {
				parts = append(parts, strings.TrimPrefix(p.series, g.prefix)+"="+fmtValue(p.value))
			}
		}
		fmt.Fprintf(w, "%s %-9s %s\n", at, g.title, strings.Join(parts, " "))
	}
}

func fmtElapsed(d time.Duration) string {
	d = d.Round(time.Second)
	return fmt.Sprintf("%02d:%02d", int(d.Minutes()), int(d.Seconds())%60)
}

func fmtValue(v float64) string {
	switch {
	case math.IsNaN(v):
		return "-"
	case v == math.Trunc(v) && math.Abs(v) < 1e15:
		return strconv.FormatInt(int64(v), 10)
	default:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
}

// soakCSV writes every sample as rows "elapsed_s,series,value" (value empty when there is none,
// as a latency in an interval where no saga finished).
type soakCSV struct {
	f *os.File
	w *csv.Writer
}

func createSoakCSV(path string) (*soakCSV, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--csv: %w", err)
	}
	c := &soakCSV{f: f, w: csv.NewWriter(f)}
	if err := c.w.Write([]string{"elapsed_s", "series", "value"}); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("--csv: %w", err)
	}
	return c, nil
}

func (c *soakCSV) write(elapsed time.Duration, pts []soakPoint) error {
	at := strconv.FormatFloat(elapsed.Seconds(), 'f', 1, 64)
	for _, p := range pts {
		v := ""
		if !math.IsNaN(p.value) {
			v = strconv.FormatFloat(p.value, 'f', -1, 64)
		}
		if err := c.w.Write([]string{at, p.series, v}); err != nil {
			return fmt.Errorf("--csv: %w", err)
		}
	}
	c.w.Flush()
	if err := c.w.Error(); err != nil {
		return fmt.Errorf("--csv: %w", err)
	}
	return nil
}

func (c *soakCSV) close() error {
	c.w.Flush()
	if err := c.w.Error(); err != nil {
		_ = c.f.Close()
		return fmt.Errorf("--csv: %w", err)
	}
	return c.f.Close()
}
