// Command pgpeak samples how many client connections the PostgreSQL server of a DSN holds, four
// times a second, until it is interrupted (SIGINT or SIGTERM); it then prints the peak and the
// time it was seen. scripts/busy.sh runs it beside the test suite to check that the suite stays
// under its connection budget.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: pgpeak DSN   (prints the peak number of client connections when interrupted)")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	db, err := sqlx.Open("postgres", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgpeak:", err)
		os.Exit(1)
	}
	defer db.Close()
	db.SetMaxOpenConns(1) // the sampler's own connection is counted too, once

	peak, at, samples, failures := 0, time.Time{}, 0, 0
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		var n int
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := db.GetContext(qctx, &n, `SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'`)
		cancel()
		switch {
		case err == nil:
			samples++
			if n > peak {
				peak, at = n, time.Now()
			}
		case ctx.Err() == nil:
			failures++
		}
		select {
		case <-ctx.Done():
			fmt.Printf("peak %d client connections (the sampler's own included) at %s; %d samples, %d failed\n",
				peak, at.Format(time.TimeOnly), samples, failures)
			return
		case <-tick.C:
		}
	}
}
