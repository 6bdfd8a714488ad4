// Package participant is the service-side SDK of Sagaflow: a service registers a handler per saga
// command and per compensation, and each command is handled inside one transaction of the
// service's own database (PostgreSQL or SQLite), with the reply written to the outbox in that same
// transaction. Effects and reply commit together or not at all.
//
// # Usage
//
//	if err := participant.Migrate(ctx, db); err != nil { … } // barrier + outbox tables
//	p, err := participant.New(db, js, &participant.Config{Service: "payment"})
//	p.Handle("ChargePayment", func(ctx context.Context, tx *sqlx.Tx, cmd participant.Command) (participant.Result, error) {
//		var in struct{ OrderID string `json:"order_id"` }
//		if err := cmd.Input(&in); err != nil {
//			return participant.Result{}, participant.Reject(err) // never handleable: dead-letter now
//		}
//		// … write the charge with tx …
//		return participant.Success(map[string]string{"charge_id": id}), nil
//	})
//	p.Compensate("RefundPayment", refund)
//	err = p.Run(ctx) // until ctx ends; or p.Start(ctx) … p.Stop(ctx)
//
// db is the service's own *sqlx.DB (PostgreSQL through lib/pq or SQLite through modernc.org/sqlite;
// the dialect is detected from the driver) and js a jetstream.JetStream. Run creates or updates
// Sagaflow's JetStream streams (unless Config.DisableStreamSetup), runs the relay of the service's
// outbox so replies and domain events reach the bus (unless Config.DisableRelay, when a separate
// "sagaflow relay" process does it), and consumes the service's commands. The replies of each
// commit are published from memory at once; rows of other processes' commits are found by the
// relay's poll (outbox.RelayConfig.PollInterval), or at once on PostgreSQL when their writers set
// outbox.WriterConfig.Notify and the relay has a ListenDSN.
//
// # Guarantees: the barrier
//
// The participant keys what it has done on (saga id, step, generation, action) in the table
// sagaflow_barrier, in the handler's transaction, together with the reply it gave. The generation
// (Command.Generation) is 0 until an operator retries a step that failed; a retry in a new
// generation is a new action, so its handler runs again (the failure before it left no effect),
// and every rule below holds within a generation:
//   - the same command again (a duplicate, a redelivery, an orchestrator retry after a lost reply)
//     does not run the handler: the recorded reply is sent again, echoing the new attempt;
//   - a compensation for a step whose forward action never ran here, or did not succeed, is
//     recorded and answered success without calling the compensation handler; it also leaves a
//     tombstone on the forward action;
//   - a forward command arriving after its compensation (a "hanging" command) is refused and
//     answered cancelled, so it never leaves an effect that nothing would undo.
//
// Replicas of a service share the work through one durable JetStream consumer. Two replicas that
// receive the same command at once cannot both run the handler: the barrier row's primary key is
// inserted first, and PostgreSQL makes the second insert wait for the first transaction (SQLite
// transactions are exclusive).
//
// A handler answers Success (with an output merged into the saga's data) or Failure (a business
// failure: its writes are rolled back, the saga compensates). An error made by Reject refuses the
// command for good: its writes are rolled back and it goes to the SAGA_DLQ stream at once, with the
// reason. A command whose reply subject is not under saga.reply. is dead-lettered without running
// anything: a participant replies only where the orchestrator listens. Any other error, or a
// panic, is transient: that command's work is rolled back and it is redelivered after Config.NakDelay
// (doubled with each delivery, up to Config.AckWait); after Config.MaxDeliver deliveries it goes to the SAGA_DLQ stream with the error as its reason. A
// message that breaks the message contract, or names a command with no handler, goes there at once.
// A compensation that answers Failure is not recorded, so the orchestrator's retry runs it again.
//
// # The hot path
//
// One goroutine reads the service's durable consumer in batches: the commands JetStream has
// delivered (up to Config.Batch, without waiting to fill a batch) are handled in one transaction,
// then acknowledged together (dead-lettered or nacked one by one). One command's failure or
// transient error rolls back only its own part. Handlers run without savepoints while they
// succeed; when one fails, the transaction is rolled back and the batch handled again in a new
// one, where the failed handler's answer stands without calling it again and the handlers after it
// run under savepoints (the handlers before it run again: their writes were rolled back). So a
// handler may run more than once for one delivery, always in a transaction of which only one
// commits — as after a redelivery, its effects outside the transaction are its own to make
// idempotent. If the transaction as a whole fails (a deadlock, a commit error), each command is
// retried in its own transaction. So a busy service pays one commit per batch rather than one per
// command, and a few statements per batch for the barrier and the outbox rather than several per
// command.
//
// Replies are new messages (fresh ids) that echo the attempt of the command they answer, so the
// orchestrator takes a replayed answer as the answer to the attempt it is waiting for.
//
// # Retention
//
// Run prunes the barrier every minute: the rows of a saga go once every row of that saga is older
// than Config.BarrierRetention (30 days by default), long after any copy of its commands can
// arrive (see prune.go).
package participant
