// Package outbox is Sagaflow's transactional outbox, its relay to NATS JetStream, and the inbox
// that makes consumption idempotent: together, every message a service commits goes out exactly
// once, and is applied once by each consumer.
//
// # Writing
//
// A service writes messages inside its own database transaction (PostgreSQL or SQLite, *sql.Tx or
// *sqlx.Tx), next to the changes they announce:
//
//	w := outbox.NewWriter(db, nil) // the dialect is detected from db's driver
//	tx, err := db.BeginTxx(ctx, nil)
//	// ... the service's own writes with tx ...
//	msg := message.NewMessage("", payload) // empty UUID: a UUIDv7 is assigned
//	err = w.Write(ctx, tx, "events.order.placed", outbox.WithOrderingKey(msg, orderID))
//	err = tx.Commit()
//
// A Watermill application publishes through w.Publisher(ctx, tx), a message.Publisher bound to the
// transaction: a cqrs.EventBus built on it publishes its events exactly once.
//
// The rows become visible to the relay when the transaction commits, and never exist if it rolls
// back. Write checks every message first (subject, size against WriterConfig.MaxPayload) and
// writes nothing of a call that has a bad one, so nothing unpublishable is committed.
//
// # Relaying
//
// NewRelay(db, js, cfg) reads db's outbox and publishes to JetStream (EnsureStreams creates the
// streams). The participant runs one itself; the orchestrator node ("sagaflow serve") too; "sagaflow
// relay" is the same relay as a process of its own. Relay claims committed rows in batches, oldest
// first, publishes each batch pipelined with Nats-Msg-Id = "<subject>:<message id>" (bus.MsgID),
// and marks the acknowledged rows published (deletes them, or keeps them for
// RelayConfig.Retention). On PostgreSQL the claim is SELECT … FOR UPDATE
// SKIP LOCKED held while the batch is in flight, so any number of relays share the work, and a
// relay that dies mid-batch leaves its rows to the others at once; the re-publish carries the same
// Nats-Msg-Id and JetStream drops the duplicate inside its window. Relays are woken by Relay.Wake
// in process and, on PostgreSQL, by LISTEN/NOTIFY from writers in other processes that ask for it
// (WriterConfig.Notify: a NOTIFY serialises commits cluster-wide, so commits send none on their
// own), with a poll (RelayConfig.PollInterval) behind both. An id cursor ("seq greater than the last seen") is never
// used: ids are assigned at insert and become visible at commit, so it would skip late commits.
//
// When NATS is unreachable the relay backs off (exponentially, capped) and retries the same rows;
// outages never count against a row (JetStream unavailable, or one of Sagaflow's own streams
// missing until it is recreated). A row refused because of itself (an invalid subject, a subject
// no stream captures, a payload or headers over the server's maximum: see
// bus.IsPermanentPublishError) counts an attempt; after RelayConfig.MaxAttempts it is
// quarantined with its last error (quarantined_at, last_error), logged, counted in Stats, and
// skipped, so it does not block the rows behind it.
//
// # Ordering
//
// Messages with the same ordering key are published in the order they were written (their seq):
// on PostgreSQL one relay at a time publishes a key (a transaction-scoped advisory lock per key,
// taken in the claim), and a claim that holds a key but not the key's first waiting row (another
// relay was finishing it while the claim scanned) leaves that key's rows for a later claim; on
// SQLite there is one relay. When the writers of a key serialise — as they
// do when they update the same row, the usual reason for a key — that is their commit order; a
// row whose transaction commits after a later-written row of its key was already published goes
// out after it, i.e. still in commit order. Rows behind a row of their key that failed because of
// itself wait until it is published or quarantined (quarantine then releases them, so a key is
// never blocked for ever). Within one batch, rows already pipelined behind a row that then fails
// go out ahead of its retry; this needs a failure of that very row, and never happens for outages
// of the whole connection.
//
// # Consuming
//
// Inbox records (consumer, message id) in the consumer's transaction, together with the
// message's effects: Inbox.Handler wraps a function as a Watermill handler,
// so a redelivery, or a re-publish after the duplicate window, applies nothing twice. Prune
// removes rows older than a retention that must exceed the redelivery horizon.
//
// # Observability
//
// Relay.Stats reports the backlog, the age of the oldest unpublished row, the messages published
// and the quarantined rows.
package outbox
