package participant_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sagaflow/sagaflow/internal/natsembed"
	"github.com/sagaflow/sagaflow/internal/sqldb"
	"github.com/sagaflow/sagaflow/outbox"
	"github.com/sagaflow/sagaflow/participant"
)

// A payment service: one handler, run with Start, answering a command that the example sends by
// hand as the orchestrator would (README, "The message contract").
func ExampleNew() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "sagaflow-example")
	defer os.RemoveAll(dir)
	srv, err := natsembed.Start(natsembed.Config{Dir: dir}) // any NATS server with JetStream
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
	db, err := sqlx.Open("sqlite", sqldb.SQLiteDSN(filepath.Join(dir, "payment.db"))) // or "postgres"
	if err != nil {
		panic(err)
	}
	defer db.Close()
	if err := participant.Migrate(ctx, db); err != nil {
		panic(err)
	}

	p, err := participant.New(db, js, &participant.Config{Service: "payment"})
	if err != nil {
		panic(err)
	}
	p.Handle("ChargePayment", func(ctx context.Context, tx *sqlx.Tx, cmd participant.Command) (participant.Result, error) {
		var in struct {
			AmountCents int `json:"amount_cents"`
		}
		if err := cmd.Input(&in); err != nil {
			return participant.Result{}, participant.Reject(err)
		}
		// ... record the charge with tx ...
		return participant.Success(map[string]any{"charged_cents": in.AmountCents}), nil
	})
	if err := p.Start(ctx); err != nil { // creates the streams, runs the relay, consumes
		panic(err)
	}
	defer func() { _ = p.Stop(ctx) }()

	cmd := nats.NewMsg("saga.cmd.payment.ChargePayment")
	cmd.Data = []byte(`{"input":{"amount_cents":250},"steps":{}}`)
	for k, v := range map[string]string{"Nats-Msg-Id": "m-1", "Sagaflow-Saga-Id": "saga-1", "Sagaflow-Definition": "checkout",
		"Sagaflow-Definition-Version": "1", "Sagaflow-Step": "charge", "Sagaflow-Attempt": "1", "Sagaflow-Action": "forward",
		"Sagaflow-Reply-To": "saga.reply.checkout"} {
		cmd.Header.Set(k, v)
	}
	if _, err := js.PublishMsg(ctx, cmd); err != nil {
		panic(err)
	}
	// SAGA_REPLIES is a work queue: its one reader (here, in place of the orchestrator) acks.
	replies, err := js.CreateConsumer(ctx, outbox.StreamReplies, jetstream.ConsumerConfig{AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		panic(err)
	}
	reply, err := replies.Next(jetstream.FetchMaxWait(time.Minute))
	if err != nil {
		panic(err)
	}
	_ = reply.Ack()
	fmt.Println(reply.Subject(), reply.Headers().Get("Sagaflow-Outcome"), string(reply.Data()))
	// Output: saga.reply.checkout success {"output":{"charged_cents":250}}
}
