// Command hotel-service runs the hotel participant of the trip-booking example as its own process:
// its database (PostgreSQL or SQLite), a participant consuming saga.cmd.hotel.> from NATS
// JetStream, and the relay of its outbox, all from Sagaflow's public packages.
//
//	go run ./cmd/hotel-service --db sqlite:hotel.db --nats nats://127.0.0.1:4222 --rooms grand=10
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // PostgreSQL
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	_ "modernc.org/sqlite" // SQLite, pure Go

	"github.com/sagaflow/sagaflow/outbox"
	"github.com/sagaflow/sagaflow/participant"

	"example.com/travel/hotel"
)

func main() {
	fs := flag.NewFlagSet("hotel-service", flag.ContinueOnError)
	dbURL := fs.String("db", "", "the hotel's database: postgres://… or sqlite:PATH (required)")
	natsURL := fs.String("nats", nats.DefaultURL, "NATS server URL(s), comma-separated")
	rooms := fs.String("rooms", "", "hotel=free,… rooms to add to a new database (e.g. grand=10)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		os.Exit(2)
	}
	if *dbURL == "" {
		fmt.Fprintln(os.Stderr, "hotel-service: --db is required")
		fs.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *dbURL, *natsURL, *rooms); err != nil {
		fmt.Fprintln(os.Stderr, "hotel-service:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, dbURL, natsURL, rooms string) error {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	driver, dsn := "postgres", dbURL
	if path, ok := strings.CutPrefix(dbURL, "sqlite:"); ok {
		// WAL, a busy timeout and IMMEDIATE transactions: what Sagaflow needs of SQLite.
		driver, dsn = "sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_txlock=immediate"
	}
	db, err := sqlx.Open(driver, dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := hotel.Migrate(ctx, db); err != nil {
		return err
	}
	for _, spec := range strings.Split(rooms, ",") {
		if spec == "" {
			continue
		}
		name, n, ok := strings.Cut(spec, "=")
		free, err := strconv.Atoi(n)
		if !ok || err != nil {
			return fmt.Errorf("--rooms %q: want hotel=free", spec)
		}
		if err := hotel.AddRooms(ctx, db, name, free); err != nil {
			return fmt.Errorf("--rooms %s: %w", spec, err)
		}
	}
	nc, err := nats.Connect(natsURL, nats.Name("hotel-service"), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("connect to NATS %s: %w", natsURL, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	relay := &outbox.RelayConfig{}
	if driver == "postgres" {
		relay.ListenDSN = dbURL // commits of other processes on this database wake the relay
	}
	p, err := participant.New(db, js, &participant.Config{Service: hotel.Service, Logger: log, Relay: relay})
	if err != nil {
		return err
	}
	hotel.Register(p)
	log.InfoContext(ctx, "hotel service running", "nats", natsURL)
	return p.Run(ctx) // creates the streams, relays the outbox, consumes commands until ctx ends
}
