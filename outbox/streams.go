package outbox

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sagaflow/sagaflow/internal/bus"
)

// The JetStream streams of Sagaflow, each with the subjects it captures (README, "The message
// contract"). EnsureStreams creates them.
const (
	// StreamCommands holds saga.cmd.> : orchestrator → participants.
	StreamCommands = bus.StreamCommands
	// StreamReplies holds saga.reply.> : participants → orchestrator.
	StreamReplies = bus.StreamReplies
	// StreamEvents holds events.> : services' domain events (a definition may start on one).
	StreamEvents = bus.StreamEvents
	// StreamDLQ holds saga.dlq.> : messages that could not be handled, with the reason.
	StreamDLQ = bus.StreamDLQ
)

// StreamsConfig tunes the streams EnsureStreams creates. The zero value (or nil) is a single-server
// setup: file storage, one replica, a 2-minute duplicate window. SAGA_COMMANDS and SAGA_REPLIES
// are work queues (a message is deleted once its consumer acknowledges it; one consumer per
// subject, explicit acks); EVENTS and SAGA_DLQ keep limits retention.
type StreamsConfig struct {
	// Namespace, when set, prefixes the stream names, their subjects and the durable consumers of
	// one installation, so several share a NATS account: [a-z0-9-], 1..32 (README, "The message
	// contract"). Empty (default): the names without a prefix.
	Namespace string
	// Replicas per stream: 1 (default) on a single server, 3 or 5 on a cluster.
	Replicas int
	// Duplicates is the window in which JetStream drops a message whose Nats-Msg-Id it has already
	// stored; default 2 minutes. Set it above the worst relay lag you expect; consumers still
	// deduplicate older re-publishes (the inbox, the participant barrier).
	Duplicates time.Duration
	// MaxAge discards domain events (EVENTS) older than this; 0 keeps them.
	MaxAge time.Duration
	// DLQMaxAge discards dead letters (SAGA_DLQ) older than this; 0 keeps them.
	DLQMaxAge time.Duration
}

// EnsureStreams creates each of Sagaflow's streams that does not exist on js and updates those that
// differ from cfg (nil: the defaults). It is idempotent and safe to call from every process at
// start, concurrently. The participant and the orchestrator call it themselves unless told not to;
// call it from a deployment job when processes run without the permission to manage streams.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, cfg *StreamsConfig) error {
	return bus.EnsureStreams(ctx, js, cfg.bus())
}

func (c *StreamsConfig) bus() bus.StreamsConfig {
	if c == nil {
		return bus.StreamsConfig{}
	}
	return bus.StreamsConfig{Namespace: bus.Namespace(c.Namespace), Replicas: c.Replicas, Duplicates: c.Duplicates, MaxAge: c.MaxAge, DLQMaxAge: c.DLQMaxAge}
}
