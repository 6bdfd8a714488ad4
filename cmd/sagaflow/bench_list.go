package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/spf13/cobra"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/engine"
	"github.com/sagaflow/sagaflow/engine/httpapi"
	"github.com/sagaflow/sagaflow/internal/pgschema"
	"github.com/sagaflow/sagaflow/internal/server"
	"github.com/sagaflow/sagaflow/internal/sqldb"
)

// listBenchConfig is what "sagaflow bench list" measures.
type listBenchConfig struct {
	postgres string
	sagas    int
	inputKB  int
	runs     int
}

// listBenchResult is one JSON line of "sagaflow bench list": one request, timed runs times.
type listBenchResult struct {
	Request   string  `json:"request"`
	Sagas     int     `json:"sagas"`
	InputKB   int     `json:"input_kb"`
	Runs      int     `json:"runs"`
	MedianMS  float64 `json:"median_ms"`
	MaxMS     float64 `json:"max_ms"`
	Answer    int     `json:"answer_bytes"`
	AllocedKB uint64  `json:"allocated_kb_per_request"`
}

func newBenchListCmd() *cobra.Command {
	var cfg listBenchConfig
	c := &cobra.Command{
		Use:   "list",
		Short: "List latency and server memory over many sagas with large inputs",
		Long: `Bench list seeds a throwaway schema with --sagas sagas of about --input-kb KiB of
incompressible input each (one saga started by the engine, cloned in SQL with new ids and business
keys), serves the real API handler on 127.0.0.1, and times "sagaflow list --limit 100" (the CLI's
own code) and GET /v1/sagas?limit=1000. It prints the median and worst latency, the size of the
answer and the bytes the process allocated per request (server, plus the client's decoding for the
CLI). The schema is dropped at the end.`,
		Example: `  sagaflow bench list
  sagaflow bench list --sagas 1000 --input-kb 900`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.sagas < 1 || cfg.inputKB < 1 || cfg.runs < 1 {
				return usageError{fmt.Errorf("--sagas, --input-kb and --runs must be positive")}
			}
			dsn, err := pgschema.Find(cmd.Context(), cfg.postgres)
			if err != nil {
				return err
			}
			cfg.postgres = dsn
			return runListBench(cmd.Context(), cfg, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	c.Flags().StringVar(&cfg.postgres, "postgres", "", "PostgreSQL DSN (default: $SAGAFLOW_TEST_POSTGRES or 127.0.0.1:5432)")
	c.Flags().IntVar(&cfg.sagas, "sagas", 10000, "sagas in the database")
	c.Flags().IntVar(&cfg.inputKB, "input-kb", 100, "size of each saga's input in KiB")
	c.Flags().IntVar(&cfg.runs, "runs", 5, "timed runs of each request")
	return c
}

func runListBench(ctx context.Context, cfg listBenchConfig, stdout, progress io.Writer) error {
	schemaDSN, drop, err := pgschema.Create(ctx, cfg.postgres, "bench_list")
	if err != nil {
		return err
	}
	defer func() { _ = drop(context.WithoutCancel(ctx)) }()
	db, err := sqldb.Open(ctx, schemaDSN)
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(4)
	if err := engine.Migrate(ctx, db); err != nil {
		return err
	}
	reg := definitions.NewRegistry()
	def, err := definitions.New("bench-list", 1).Step("load", "store", "Load").Build()
	if err != nil {
		return err
	}
	if err := reg.Register(def); err != nil {
		return err
	}
	e, err := engine.New(engine.Config{DB: db, Definitions: reg})
	if err != nil {
		return err
	}
	began := time.Now()
	if err := seedLarge(ctx, db, e, cfg.sagas, cfg.inputKB<<10); err != nil {
		return err
	}
	var size int64
	if err := db.GetContext(ctx, &size, `SELECT pg_total_relation_size('sagaflow_instances')`); err != nil {
		return fmt.Errorf("size of sagaflow_instances: %w", err)
	}
	fmt.Fprintf(progress, "seeded %d sagas of %d KiB in %s; sagaflow_instances takes %d MiB\n",
		cfg.sagas, cfg.inputKB, time.Since(began).Round(time.Millisecond), size>>20)

	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := server.NewHTTPServer(httpapi.NewHandler(e, reg, nil), server.HTTPLimits{})
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	base := "http://" + ln.Addr().String()

	cli := func() (int, error) {
		var out, errs bytes.Buffer
		if code := run(ctx, []string{"list", "--api", base, "--limit", "100"}, &out, &errs); code != 0 {
			return 0, fmt.Errorf("sagaflow list: exit %d: %s", code, errs.String())
		}
		return out.Len(), nil
	}
	api := func() (int, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/sagas?limit=1000", nil)
		if err != nil {
			return 0, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		n, err := io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("GET /v1/sagas: HTTP %d", resp.StatusCode)
		}
		return int(n), err
	}
	enc := json.NewEncoder(stdout)
	for _, m := range []struct {
		name string
		fn   func() (int, error)
	}{{"sagaflow list --limit 100", cli}, {"GET /v1/sagas?limit=1000", api}} {
		res, err := timeRequest(m.fn, cfg.runs)
		if err != nil {
			return err
		}
		res.Request, res.Sagas, res.InputKB = m.name, cfg.sagas, cfg.inputKB
		if err := enc.Encode(res); err != nil {
			return err
		}
	}
	return nil
}

// timeRequest runs fn once to warm up, then runs times, and returns the latencies and what the
// process allocated per run.
func timeRequest(fn func() (int, error), runs int) (listBenchResult, error) {
	if _, err := fn(); err != nil {
		return listBenchResult{}, err
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	took := make([]float64, 0, runs)
	answer := 0
	for range runs {
		start := time.Now()
		n, err := fn()
		if err != nil {
			return listBenchResult{}, err
		}
		took = append(took, float64(time.Since(start).Microseconds())/1000)
		answer = n
	}
	runtime.ReadMemStats(&after)
	slices.Sort(took)
	return listBenchResult{Runs: runs, MedianMS: took[len(took)/2], MaxMS: took[len(took)-1], Answer: answer,
		AllocedKB: (after.TotalAlloc - before.TotalAlloc) / uint64(runs) >> 10}, nil
}

// seedLarge stores n sagas with inputBytes of incompressible input each: one started by the
// engine, so its state document is the engine's own, then cloned in SQL, 200 at a time, with new
// UUIDv7 ids (in start order) and business keys. Starting each through the engine would also
// write its command to the outbox, doubling the data for no gain to a list benchmark.
func seedLarge(ctx context.Context, db *sqlx.DB, e *engine.Engine, n, inputBytes int) error {
	raw := make([]byte, inputBytes*3/4)
	_, _ = rand.Read(raw)
	input, err := json.Marshal(map[string]string{"blob": base64.StdEncoding.EncodeToString(raw)})
	if err != nil {
		return err
	}
	template, err := e.Start(ctx, "bench-list", "bench-0", input, engine.StartOptions{})
	if err != nil {
		return fmt.Errorf("start the template saga: %w", err)
	}
	const clone = `INSERT INTO sagaflow_instances (id, definition, version, business_key, status, state, trace_id,
	trace_flags, deadline, row_version, history_seq, created_at, updated_at, finished_at, attention)
SELECT v.id, t.definition, t.version, v.key, t.status,
	jsonb_set(jsonb_set(t.state, '{id}', to_jsonb(v.id)), '{business_key}', to_jsonb(v.key)),
	t.trace_id, t.trace_flags, t.deadline, t.row_version, 0, t.created_at, t.updated_at, t.finished_at, t.attention
FROM sagaflow_instances t, unnest($2::text[], $3::text[]) AS v(id, key)
WHERE t.id = $1`
	for done := 1; done < n; {
		batch := min(200, n-done)
		ids, keys := make([]string, batch), make([]string, batch)
		for i := range batch {
			id, err := uuid.NewV7()
			if err != nil {
				return err
			}
			ids[i], keys[i] = id.String(), "bench-"+strconv.Itoa(done+i)
		}
		if _, err := db.ExecContext(ctx, clone, template, textArray(ids), textArray(keys)); err != nil {
			return fmt.Errorf("clone sagas: %w", err)
		}
		done += batch
	}
	if _, err := db.ExecContext(ctx, `ANALYZE sagaflow_instances`); err != nil {
		return fmt.Errorf("analyze: %w", err)
	}
	// The clones must be sagas the engine reads like its own.
	last := "bench-" + strconv.Itoa(n-1)
	inst, err := e.GetByKey(ctx, "bench-list", last)
	if err != nil {
		return fmt.Errorf("read a cloned saga: %w", err)
	}
	var got map[string]string
	if err := json.Unmarshal(inst.Data.Input, &got); err != nil {
		return fmt.Errorf("cloned saga %s: input: %w", inst.ID, err)
	}
	if inst.BusinessKey != last || len(got["blob"]) != base64.StdEncoding.EncodedLen(len(raw)) {
		return fmt.Errorf("cloned saga %s: key %q and a blob of %d bytes, want %q and %d", inst.ID, inst.BusinessKey,
			len(got["blob"]), last, base64.StdEncoding.EncodedLen(len(raw)))
	}
	return nil
}

// textArray is the PostgreSQL array literal of values that need no quoting (ids, bench keys).
func textArray(values []string) string { return "{" + strings.Join(values, ",") + "}" }
