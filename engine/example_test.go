package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/engine"
	"github.com/sagaflow/sagaflow/internal/natsembed"
	"github.com/sagaflow/sagaflow/internal/sqldb"
	"github.com/sagaflow/sagaflow/outbox"
	"github.com/sagaflow/sagaflow/participant"
)

const checkout = `
name: checkout
version: 1
steps:
  - name: reserve
    service: stock
    command: Reserve
    compensation: Release
  - name: charge
    service: payment
    command: Charge
`

// An orchestrator (the engine and the relay of its outbox) and two participants in one process,
// running a two-step saga whose second step declines: the first step is compensated.
func ExampleNew() {
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
	if err := outbox.EnsureStreams(ctx, js, nil); err != nil {
		panic(err)
	}
	open := func(name string) *sqlx.DB { // each service has its own database
		db, err := sqlx.Open("sqlite", sqldb.SQLiteDSN(filepath.Join(dir, name+".db")))
		if err != nil {
			panic(err)
		}
		return db
	}

	// The orchestrator.
	db := open("orchestrator")
	defer db.Close()
	if err := engine.Migrate(ctx, db); err != nil {
		panic(err)
	}
	def, err := definitions.Parse("checkout.yaml", []byte(checkout))
	if err != nil {
		panic(err)
	}
	reg := definitions.NewRegistry()
	if err := reg.Register(def); err != nil {
		panic(err)
	}
	relay := outbox.NewRelay(db, js, nil)
	e, err := engine.New(engine.Config{DB: db, JetStream: js, Definitions: reg, OnCommit: relay.Wake})
	if err != nil {
		panic(err)
	}
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = relay.Run(rctx) }()
	go func() { _ = e.Run(rctx) }()

	// The participants.
	ok := func(context.Context, *sqlx.Tx, participant.Command) (participant.Result, error) {
		return participant.Success(nil), nil
	}
	declined := func(context.Context, *sqlx.Tx, participant.Command) (participant.Result, error) {
		return participant.Failure("card declined"), nil
	}
	for service, register := range map[string]func(*participant.Participant){
		"stock":   func(p *participant.Participant) { p.Handle("Reserve", ok); p.Compensate("Release", ok) },
		"payment": func(p *participant.Participant) { p.Handle("Charge", declined) },
	} {
		pdb := open(service)
		defer pdb.Close()
		if err := participant.Migrate(ctx, pdb); err != nil {
			panic(err)
		}
		p, err := participant.New(pdb, js, &participant.Config{Service: service})
		if err != nil {
			panic(err)
		}
		register(p)
		if err := p.Start(ctx); err != nil {
			panic(err)
		}
		defer func() { _ = p.Stop(ctx) }()
	}

	id, err := e.Start(ctx, "checkout", "cart-7", json.RawMessage(`{"cart":"cart-7"}`), engine.StartOptions{})
	if err != nil {
		panic(err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	inst, err := e.Wait(wctx, id)
	if err != nil {
		panic(err)
	}
	fmt.Println(inst.Status, inst.BusinessKey)
	for _, s := range inst.Steps {
		fmt.Println(s.Name, s.Status)
	}
	// Output:
	// compensated cart-7
	// reserve compensated
	// charge failed
}
