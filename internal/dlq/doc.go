// Package dlq is the operator's view of the dead-letter stream SAGA_DLQ: list and read the messages
// Sagaflow could not handle, replay them to their original subject, or purge them. The HTTP API
// (engine/httpapi, /v1/dlq) and through it "sagaflow dlq" are its users.
//
// A dead-lettered message sits in SAGA_DLQ on saga.dlq.<original subject> with its original headers
// plus Sagaflow-Dlq-Reason, Sagaflow-Dlq-Subject and Sagaflow-Dlq-Deliveries (internal/bus,
// DeadLetter). A Queue reads them as Messages, named by their stream sequence.
//
//	q := dlq.New(js, dlq.Config{Logger: logger})
//	page, err := q.List(ctx, dlq.ListParams{Subject: "saga.cmd.payments.>", Limit: 50})
//	msg, err := q.Get(ctx, page.Messages[0].Seq)
//	done, err := q.Replay(ctx, []uint64{msg.Seq}, dlq.ChangeOpts{Actor: "cli:ana", Reason: "payments fixed"})
//
// # Listing
//
// List returns the matching messages newest first, a page at a time; Page.Next is the cursor (a
// stream sequence) of the next, older page. Filters: the original subject (NATS wildcards * and >,
// matched by the server), the reason (a case-insensitive substring), the saga id, and the time the
// message was dead-lettered (Since, Until). Each page reads the stream from its oldest candidate up
// to the cursor with a short-lived ephemeral consumer: the DLQ is a place for a few messages
// waiting for a human, not a store of history, so purge what has been dealt with. Listed payloads
// are previews of at most PreviewBytes and reasons at most ReasonRunes; Get returns one message
// whole.
//
// # Replay
//
// Replay republishes each message to its original subject, with its original headers (minus the
// Sagaflow-Dlq-* ones, Watermill's *_poisoned ones and the server's Nats-* ones) and a new
// Nats-Msg-Id ("dlq-replay-<seq>-<dead-lettered at, Unix ns>"), so JetStream's duplicate window
// does not drop it as the copy it was; it is deterministic, so a replay repeated after a failure
// between publish and delete is dropped by that window instead of delivered twice. It adds
// Sagaflow-Replayed-By, -At, -Reason, -From-Seq and -Msg-Id (the original id), then deletes the
// message from SAGA_DLQ once JetStream has acknowledged the copy. Deleting, rather than marking,
// keeps SAGA_DLQ the list of what still needs a human: a replay that fails again is dead-lettered
// anew, with the Sagaflow-Replayed-* headers saying where it came from, and the audit log line
// records the replay itself.
//
// Participants key what they have done on (saga id, step, action), not on the message id: a
// replayed command that was already handled is answered from the participant's barrier with the
// recorded outcome, not run twice. The engine applies a reply only to the step attempt it waits
// for and ignores (records) any other.
//
// # Audit
//
// Every Replay and Purge that changes the stream writes one Info log line ("dlq replay" or "dlq
// purge") with the actor, the reason and the sequences; a dry run changes nothing and logs nothing.
package dlq
