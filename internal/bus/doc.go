// Package bus is Sagaflow's JetStream transport, seen through Watermill's message.Publisher and
// message.Subscriber so that engine, participant and outbox code is plain Watermill code.
//
// It replaces watermill-nats for three reasons measured in LIBRARY-NOTES.md: its pkg/nats publisher
// waits for one PubAck per message (one round trip each), its pkg/jetstream publisher sends to the
// stream name instead of the subject, and its subscribers either auto-ack (losing messages) or
// delete durable consumers on close. Here:
//
//   - EnsureStreams creates or updates the streams of DESIGN.md ("Messages") with file storage and a
//     configurable duplicate window; every component calls it at start and it is idempotent.
//   - Message is one message on its way out (subject, id, headers, payload); Consumer reads a
//     durable pull consumer in batches on one goroutine and settles each Delivery by the Verdict
//     its handler returns (Ack, Retry, ToDeadLetter). The orchestrator's replies and the
//     participants' commands go this way (docs/engine.md, "The message path"); the Watermill
//     Subscriber below serves triggers and users.
//   - Publisher pipelines a whole batch with JetStream's asynchronous publish, sets Nats-Msg-Id to
//     MsgID(subject, UUID) = "<subject>:<UUID>" (so JetStream drops a re-publish to the same subject
//     inside the duplicate window, and stores the same UUID forwarded to another subject), and
//     returns only when every message is acknowledged, or a *PublishError naming those that were not.
//     PublishBatch takes a context and []Message; Publish (Watermill) converts to it.
//   - Subscriber consumes a durable pull consumer per topic (or the one its FilterSubjects name) that
//     it creates or updates but never deletes, hands up to MaxInFlight messages to the router at
//     once, double-acks on Ack and naks (with delay) on Nack, and cancels a message's context once it
//     is settled. A message's UUID is its Nats-Msg-Id without the "<subject>:" prefix; its metadata
//     are its headers plus SubjectKey and DeliveryKey. A last allowed delivery (MaxDeliver) that is
//     Nacked or left unsettled is logged at Error and counted in AbandonedMetric.
//   - Both pass Watermill's universal Pub/Sub suite (pubsub_test.go); the features it runs with say
//     what they guarantee: consumer groups and persistence, at-least-once, no ordering.
//   - Both heal the bus: a Subscriber that finds its consumer or stream missing (checked every
//     CheckInterval, and at once when the server reports the consumer deleted) recreates them and
//     goes on consuming; a Publisher whose messages for a Sagaflow stream fail because no stream
//     takes them recreates that stream (rate-limited) so the caller's retry succeeds; KeepStreams
//     keeps all four present for a node. Recreations are logged (Warn) and counted in
//     RecreatedMetric; MissingStreams is the readiness check.
//   - DeadLetter is router middleware that moves a message that failed its last allowed delivery (or
//     failed permanently) to saga.dlq.<subject>, with the reason in its headers, and acks it.
//
// At the Watermill boundary only, metadata keys starting with "_sagaflow_" are local facts and are
// never sent as headers: SubjectKey and DeliveryKey are set on received messages, never read when
// publishing (Publish sends every message to its topic).
package bus
