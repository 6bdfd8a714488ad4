// Package engine is Sagaflow's orchestrator runtime: it starts saga instances, applies the
// participants' replies, the instances' deadlines and the operators' requests to them through the
// pure state machine of package saga, stores every instance and its history in PostgreSQL or
// SQLite, and sends the commands the state machine asks for through the transactional outbox.
//
// # Usage
//
//	if err := engine.Migrate(ctx, db); err != nil { ... }        // engine, outbox and inbox tables
//	e, err := engine.New(engine.Config{DB: db, JetStream: js, Definitions: registry})
//	go e.Run(ctx)                                                // replies, timers, triggers
//	id, err := e.Start(ctx, "order-fulfilment", "order-42", input, engine.StartOptions{IdempotencyKey: "req-7"})
//	inst, err := e.Wait(ctx, id)                                 // completed, compensated or failed
//
// The outbox relay (outbox.NewRelay) runs beside it and publishes the commands.
//
// # Transactions
//
// Every transition is one database transaction: lock the instance (SELECT … FOR UPDATE on
// PostgreSQL; SQLite's write transactions are exclusive) and check its row version, apply the event
// with saga.Apply, store the instance, append its history, write its outgoing commands to the
// outbox and, for a reply, record the reply's message id in the inbox; commit; then acknowledge the
// message. A reply that does not apply (stale, a duplicate, for a finished saga) is recorded in the
// history as "ignored" with the reason and acknowledged, never applied; a malformed one, one for
// an unknown saga, and one that cannot be a participant's answer to a command the saga sent (it
// arrived on another definition's reply subject, its definition or version header names another
// definition, its step or attempt was never sent: ErrUntrustedReply) goes to the dead-letter
// stream with the reason.
//
// Start refuses, before writing anything, a business or idempotency key over
// MaxBusinessKeyBytes or with non-printable characters (CheckBusinessKey), an input over
// Config.MaxInputBytes, and a first command whose headers exceed Config.MaxHeaderBytes (NATS's
// 64 KiB) or whose size exceeds the outbox's MaxPayload: a *LimitError (ErrTooLarge) or
// ErrInvalidInput.
//
// Replies arrive through one durable JetStream consumer shared by every replica, read in batches
// by one goroutine (internal/bus Consumer). Up to Config.ReplyBatch replies are applied in one
// transaction, sorted by saga id (so replicas cannot deadlock) and, for one saga, in arrival order,
// and acknowledged after the commit. If a batch fails, its replies are retried one per transaction,
// so one poison reply cannot hold the others back.
//
// # Timers
//
// An unfinished instance has exactly one pending deadline, stored in the indexed deadline column.
// The timer loop of each replica claims due instances (FOR UPDATE SKIP LOCKED on PostgreSQL, so
// replicas share them) and applies their deadline events: step timeouts, retry backoffs and
// compensation retries. It sleeps until the nearest deadline; a transaction that writes a nearer
// one wakes it in process and, with Config.ListenDSN, through PostgreSQL NOTIFY on other replicas;
// Config.TimerInterval is the fallback poll.
//
// # Triggers
//
// A definition with a trigger starts an instance for every event on its EVENTS subject, through a
// durable consumer per definition; the business key is the payload's field named by the trigger
// and the idempotency key the event's message id, so a redelivered event starts one instance. An
// event that is not a JSON object or lacks the key goes to the dead-letter stream.
//
// # Definition versions and operators
//
// SyncDefinitions keeps the registry and the database's catalog of versions (sagaflow_definitions)
// in step: a version that unfinished sagas use comes back from the catalog when its file is gone,
// and a file that changed such a version is refused (*ChangedDefinitionError), so a saga always
// finishes on the version it started with. DefinitionVersions lists the versions with their
// sagas per status.
//
// Operators Cancel a running saga, Redrive a failed one (its compensation, or its halted step), and
// RetryStep a failed saga's halted step with a corrected input (fix and continue); each is one
// audited transaction, and a request the state machine refuses writes nothing.
//
// # Guarantees
//
//   - A transition is applied at most once: the inbox drops a redelivered reply, the state machine
//     rejects a stale one, and the history's primary key (saga_id, seq) makes recording a
//     transition twice impossible even if two replicas raced.
//   - Every command of a transition is in the outbox when the transition commits, and only then.
//     Its message id is derived from (saga, step, action, attempt), so a re-sent identical action
//     is dropped by JetStream's duplicate window.
//   - Every unfinished instance has a deadline, so none waits forever on a lost message.
//   - Commands carry a W3C traceparent whose trace id is the instance's TraceID.
//
// # Retention
//
// Run also prunes, every Config.RetentionInterval: completed and compensated sagas with their
// history Config.Retention after they finished (0, the default, keeps them; failed sagas and
// sagas in the operator's queue are always kept), and the reply inbox after
// Config.InboxRetention, beyond the latest a duplicate reply can arrive. See retention.go and
// docs/engine.md ("Retention") for why each horizon is safe.
package engine
