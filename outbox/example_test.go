package outbox_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sagaflow/sagaflow/internal/natsembed"
	"github.com/sagaflow/sagaflow/internal/sqldb"
	"github.com/sagaflow/sagaflow/outbox"
)

// A domain event written in the service's transaction, published by a relay once it commits.
func ExampleNewRelay() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "sagaflow-example")
	defer os.RemoveAll(dir)
	srv, err := natsembed.Start(natsembed.Config{Dir: dir})
	if err != nil {
		panic(err)
	}
	defer srv.Shutdown()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		panic(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	db, err := sqlx.Open("sqlite", sqldb.SQLiteDSN(filepath.Join(dir, "orders.db"))) // or "postgres"
	if err != nil {
		panic(err)
	}
	defer db.Close()
	if err := outbox.Migrate(ctx, db); err != nil {
		panic(err)
	}
	if err := outbox.EnsureStreams(ctx, js, nil); err != nil {
		panic(err)
	}

	// Write the event in the same transaction as the order.
	w := outbox.NewWriter(db, nil)
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		panic(err)
	}
	// ... INSERT INTO orders ... with tx ...
	if err := w.Write(ctx, tx, "events.order.placed", message.NewMessage("order-1-placed", []byte(`{"order_id":"o-1"}`))); err != nil {
		panic(err)
	}
	if err := tx.Commit(); err != nil {
		panic(err)
	}

	relay := outbox.NewRelay(db, js, nil)
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- relay.Run(rctx) }()
	relay.Wake() // committed in this process: publish now rather than at the next poll

	events, _ := js.OrderedConsumer(ctx, outbox.StreamEvents, jetstream.OrderedConsumerConfig{})
	m, err := events.Next(jetstream.FetchMaxWait(time.Minute))
	if err != nil {
		panic(err)
	}
	fmt.Println(m.Subject(), m.Headers().Get("Nats-Msg-Id"), string(m.Data()))
	stop()
	if err := <-done; err != nil {
		panic(err)
	}
	// Output: events.order.placed events.order.placed:order-1-placed {"order_id":"o-1"}
}
