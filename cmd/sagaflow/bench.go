package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	order "github.com/sagaflow/sagaflow/examples/order"
	"github.com/sagaflow/sagaflow/examples/order/driver"
	"github.com/sagaflow/sagaflow/examples/order/payment"
	"github.com/sagaflow/sagaflow/internal/natsembed"
	"github.com/sagaflow/sagaflow/internal/orderstack"
	"github.com/sagaflow/sagaflow/internal/outboxbench"
	"github.com/sagaflow/sagaflow/internal/pgschema"
	"github.com/sagaflow/sagaflow/internal/sqldb"
)

func newBenchCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "bench",
		Short: "Measure Sagaflow on this machine (PostgreSQL + JetStream)",
		Long: `Bench measures throughput and latency against a real PostgreSQL (--postgres, else
$SAGAFLOW_TEST_POSTGRES, else 127.0.0.1:5432; "bash scripts/with-postgres.sh sagaflow bench ..."
starts a private one when none answers) and an in-process NATS JetStream server. Progress goes to
stderr; results are JSON lines on stdout. docs/benchmarks.md has the figures of this repository.`,
	}
	c.AddCommand(newBenchOutboxCmd(), newBenchSagaCmd())
	return c
}

func newBenchOutboxCmd() *cobra.Command {
	var cfg outboxbench.Config
	c := &cobra.Command{
		Use:     "outbox",
		Short:   "Outbox relay throughput and commit-to-ack latency, against raw publish and Watermill's forwarder",
		Example: `  sagaflow bench outbox --messages 20000 --writers 16`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dsn, err := pgschema.Find(cmd.Context(), cfg.PostgresDSN)
			if err != nil {
				return err
			}
			cfg.PostgresDSN = dsn
			cfg.Progress = cmd.ErrOrStderr()
			res, err := outboxbench.Run(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			return json.NewEncoder(cmd.OutOrStdout()).Encode(res)
		},
	}
	c.Flags().StringVar(&cfg.PostgresDSN, "postgres", "", "PostgreSQL DSN (default: $SAGAFLOW_TEST_POSTGRES or 127.0.0.1:5432)")
	c.Flags().StringVar(&cfg.NATSURL, "nats", "", "NATS URL (default: an in-process server)")
	c.Flags().IntVar(&cfg.Messages, "messages", 20000, "messages per measurement")
	c.Flags().IntVar(&cfg.Writers, "writers", 16, "concurrent writers")
	return c
}

// sagaBenchResult is one JSON line of "sagaflow bench saga".
type sagaBenchResult struct {
	Mode        string `json:"mode"`
	Concurrency int    `json:"concurrency"`
	driver.Report
}

func newBenchSagaCmd() *cobra.Command {
	var dsn, concurrency, modes string
	var orders int
	c := &cobra.Command{
		Use:   "saga",
		Short: "Order sagas per second and start-to-finish latency, all on one PostgreSQL",
		Long: `Saga runs the order example (orchestrator and four services, each on its own schema of one
PostgreSQL, one in-process JetStream) and places --orders orders at each concurrency, in each
mode: "success" (every saga completes) and "compensate" (every payment is declined, so every
saga compensates). It prints one JSON line per run: the driver's report plus mode and concurrency.`,
		Example: `  sagaflow bench saga --orders 2000 --concurrency 1,16,256`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			levels, err := parseInts(concurrency)
			if err != nil {
				return usageError{fmt.Errorf("--concurrency: %w", err)}
			}
			base, err := pgschema.Find(cmd.Context(), dsn)
			if err != nil {
				return err
			}
			for _, mode := range strings.Split(modes, ",") {
				if mode != "success" && mode != "compensate" {
					return usageError{fmt.Errorf("--modes: %q is neither success nor compensate", mode)}
				}
				for _, c := range levels {
					n := orders
					if c == 1 && n > 500 {
						n = 500 // one at a time, a few hundred sagas measure latency well enough
					}
					r, err := benchSaga(cmd.Context(), base, mode, c, n, cmd.ErrOrStderr())
					if err != nil {
						return err
					}
					if err := json.NewEncoder(cmd.OutOrStdout()).Encode(sagaBenchResult{mode, c, r}); err != nil {
						return err
					}
				}
			}
			return nil
		},
	}
	c.Flags().StringVar(&dsn, "postgres", "", "PostgreSQL DSN (default: $SAGAFLOW_TEST_POSTGRES or 127.0.0.1:5432)")
	c.Flags().StringVar(&concurrency, "concurrency", "1,16,256", "comma-separated concurrency levels")
	c.Flags().StringVar(&modes, "modes", "success,compensate", "comma-separated: success, compensate")
	c.Flags().IntVar(&orders, "orders", 2000, "orders per run (at most 500 at concurrency 1)")
	return c
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, p := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive integer", p)
		}
		out = append(out, n)
	}
	return out, nil
}

// benchSaga runs one measurement on fresh schemas and a fresh JetStream store.
func benchSaga(ctx context.Context, base, mode string, concurrency, orders int, progress io.Writer) (r driver.Report, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	dir, err := os.MkdirTemp("", "sagaflow-bench-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)
	ns, err := natsembed.Start(natsembed.Config{Dir: dir})
	if err != nil {
		return r, err
	}
	defer ns.Shutdown()
	nc, err := connectNATS(ns.ClientURL(), "sagaflow-bench", slog.New(slog.DiscardHandler))
	if err != nil {
		return r, err
	}
	defer nc.Close()

	var cleanups []func()
	defer func() {
		for _, c := range cleanups {
			c()
		}
	}()
	open := func(name string) (orderstack.DB, error) {
		dsn, drop, err := pgschema.Create(ctx, base, "bench_"+strings.ReplaceAll(name, "-", "_"))
		if err != nil {
			return orderstack.DB{}, err
		}
		db, err := sqldb.Open(ctx, dsn)
		if err != nil {
			return orderstack.DB{}, errors.Join(err, drop(context.WithoutCancel(ctx)))
		}
		// Five databases share one server: bound each pool so 256 sagas in flight queue for a
		// connection instead of exhausting max_connections.
		db.SetMaxOpenConns(12)
		cleanups = append(cleanups, func() { db.Close(); _ = drop(context.WithoutCancel(ctx)) })
		return orderstack.DB{DB: db, ListenDSN: dsn}, nil
	}
	orch, err := open("orchestrator")
	if err != nil {
		return r, err
	}
	services := map[string]orderstack.DB{}
	for _, s := range order.Services {
		if services[s], err = open(s); err != nil {
			return r, err
		}
	}
	pay := payment.Options{}
	if mode == "compensate" {
		pay.DeclineRate = 1
	}
	stack, err := orderstack.New(ctx, orderstack.Config{NATS: nc, Orchestrator: orch, Services: services, RunOrchestrator: true, Payment: pay})
	if err != nil {
		return r, err
	}
	runErr := make(chan error, 1)
	go func() { runErr <- stack.Run(ctx) }()
	fmt.Fprintf(progress, "bench saga: mode %s, concurrency %d, %d orders\n", mode, concurrency, orders)
	r, err = driver.Run(ctx, driver.Config{Orders: orders, Concurrency: concurrency, Starter: stack.Starter(), DBs: stack.DriverDBs(), Progress: progress, Seed: 1})
	cancel()
	if rerr := <-runErr; err == nil && rerr != nil {
		err = rerr
	}
	return r, err
}
