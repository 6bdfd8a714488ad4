package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stream names, each with the subjects it captures (DESIGN.md, "Messages").
const (
	// StreamCommands holds saga.cmd.> : orchestrator → participants.
	StreamCommands = "SAGA_COMMANDS"
	// StreamReplies holds saga.reply.> : participants → orchestrator.
	StreamReplies = "SAGA_REPLIES"
	// StreamEvents holds events.> : services' domain events.
	StreamEvents = "EVENTS"
	// StreamDLQ holds saga.dlq.> : messages that could not be handled after max deliveries.
	StreamDLQ = "SAGA_DLQ"
)

// DLQPrefix starts the subject a dead-lettered message is published to: saga.dlq.<original subject>.
const DLQPrefix = "saga.dlq."

// streamSubject is a stream and the subject filter it captures.
type streamSubject struct{ name, subject string }

// streamSubjects maps each stream to its subject filter, without a namespace.
var streamSubjects = []streamSubject{
	{StreamCommands, "saga.cmd.>"},
	{StreamReplies, "saga.reply.>"},
	{StreamEvents, "events.>"},
	{StreamDLQ, DLQPrefix + ">"},
}

// OwnSubject reports whether one of Sagaflow's streams (saga.cmd.>, saga.reply.>, events.>,
// saga.dlq.>) without a namespace captures subject. For such a subject "no stream" is an outage,
// never the message's fault: the stream is missing for a while and every process recreates it.
// Namespace.OwnSubject is the same for an installation's namespace.
func OwnSubject(subject string) bool { return Namespace("").OwnSubject(subject) }

// noStreamIsPermanent decides whether a message refused with "no response from stream" failed
// because of itself: only when its subject is outside Sagaflow's streams and JetStream answered
// the lookup of the subject with "no stream matches" (lookupErr is jetstream.ErrStreamNotFound).
// A lookup that failed otherwise (no responders while JetStream is unavailable, a timeout) means
// an outage, and so does any subject of Sagaflow's own streams.
func noStreamIsPermanent(ns Namespace, subject string, lookupErr error) bool {
	return !ns.OwnSubject(subject) && errors.Is(lookupErr, jetstream.ErrStreamNotFound)
}

// DefaultDuplicates is JetStream's own default duplicate window.
const DefaultDuplicates = 2 * time.Minute

// StreamsConfig tunes the streams EnsureStreams creates. The zero value is a single-node setup with
// the default duplicate window.
//
// Retention. SAGA_COMMANDS and SAGA_REPLIES are work queues: a message stays until a consumer
// acknowledges it, then JetStream deletes it. Each has exactly one consumer per subject (a
// service's durable on saga.cmd.<service>.>, the orchestrators' durable on saga.reply.>), so
// nothing else needs the message once it is acked, and a message for a service that is down or not
// deployed yet waits for it instead of being dropped (Interest retention would drop a message
// nobody is subscribed to, and a MaxAge would drop it after a while and keep acked ones until then).
// The cost: JetStream refuses a second consumer whose filter overlaps, so observers read these
// streams through the dead-letter stream, the database or the orchestrator's history, not with
// consumers of their own. EVENTS keeps limits retention (any number of readers; domain events are
// replayable) with MaxAge; SAGA_DLQ keeps limits retention with DLQMaxAge (default forever: a dead
// letter waits for a human).
type StreamsConfig struct {
	// Namespace prefixes the stream names and their subjects (see Namespace); empty (default) is
	// the names without a prefix. The NATS connection EnsureStreams is called on remembers it, so
	// the Publishers and Subscribers on it heal the streams of this namespace.
	Namespace Namespace
	// Replicas per stream: 1 (default) on a single server, 3 or 5 on a cluster.
	Replicas int
	// Duplicates is the window in which JetStream drops a message whose Nats-Msg-Id it has already
	// stored; default 2 minutes. Set it above the worst relay lag you expect; consumers still dedup
	// older re-publishes with the inbox.
	Duplicates time.Duration
	// MaxAge discards domain events (EVENTS) older than this; 0 keeps them (limits retention by
	// size only). The work-queue streams have no MaxAge: they keep a message until it is acked.
	MaxAge time.Duration
	// DLQMaxAge discards dead letters (SAGA_DLQ) older than this; 0 keeps them.
	DLQMaxAge time.Duration
	// Logger receives EnsureStreams' warnings (a stream whose retention cannot be changed in
	// place); nil means slog.Default(), so the operator's fix is never discarded.
	Logger *slog.Logger
}

func (c StreamsConfig) withDefaults() StreamsConfig {
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Duplicates == 0 {
		c.Duplicates = DefaultDuplicates
	}
	return c
}

func (c StreamsConfig) validate() error {
	var errs []error
	if err := c.Namespace.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("StreamsConfig.Namespace: %w", err))
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("StreamsConfig.Replicas %d: must be 1 to 5", c.Replicas))
	}
	if c.Duplicates < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("StreamsConfig.Duplicates %s: must be at least 100ms", c.Duplicates))
	}
	if c.MaxAge < 0 {
		errs = append(errs, fmt.Errorf("StreamsConfig.MaxAge %s: must not be negative", c.MaxAge))
	}
	if c.MaxAge > 0 && c.Duplicates > c.MaxAge {
		errs = append(errs, fmt.Errorf("StreamsConfig.Duplicates %s: must not exceed MaxAge %s", c.Duplicates, c.MaxAge))
	}
	if c.DLQMaxAge < 0 {
		errs = append(errs, fmt.Errorf("StreamsConfig.DLQMaxAge %s: must not be negative", c.DLQMaxAge))
	}
	if c.DLQMaxAge > 0 && c.Duplicates > c.DLQMaxAge {
		errs = append(errs, fmt.Errorf("StreamsConfig.Duplicates %s: must not exceed DLQMaxAge %s", c.Duplicates, c.DLQMaxAge))
	}
	return errors.Join(errs...)
}

// StreamConfig returns the JetStream configuration EnsureStreams applies to the stream name (in
// cfg.Namespace: a prefixed name when it is set), for tools that want to inspect or compare it.
func StreamConfig(name string, cfg StreamsConfig) (jetstream.StreamConfig, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return jetstream.StreamConfig{}, err
	}
	for _, base := range streamSubjects {
		s := streamSubject{cfg.Namespace.Stream(base.name), cfg.Namespace.Subject(base.subject)}
		if s.name == name {
			sc := jetstream.StreamConfig{
				Name:       s.name,
				Subjects:   []string{s.subject},
				Storage:    jetstream.FileStorage,
				Retention:  jetstream.WorkQueuePolicy,
				Replicas:   cfg.Replicas,
				Duplicates: cfg.Duplicates,
			}
			switch base.name {
			case StreamEvents:
				sc.Retention, sc.MaxAge = jetstream.LimitsPolicy, cfg.MaxAge
			case StreamDLQ:
				sc.Retention, sc.MaxAge = jetstream.LimitsPolicy, cfg.DLQMaxAge
			}
			return sc, nil
		}
	}
	return jetstream.StreamConfig{}, fmt.Errorf("stream %q: not one of Sagaflow's streams", name)
}

// EnsureStreams creates every stream of DESIGN.md that does not exist and updates those that do to
// cfg. It is idempotent and safe to call from every component at start, concurrently. It also
// remembers cfg for js's connection: a Publisher or Subscriber on that connection that finds one of
// these streams missing later recreates it with cfg.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, cfg StreamsConfig) error {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	for _, s := range cfg.Namespace.streams() {
		sc, err := StreamConfig(s.name, cfg)
		if err != nil {
			return fmt.Errorf("ensure streams: %w", err)
		}
		if st, err := js.Stream(ctx, s.name); err == nil {
			have := st.CachedInfo().Config
			if have.Retention != sc.Retention {
				// JetStream refuses to change a stream's retention policy, and deleting the stream
				// would delete the messages in it: keep its policy, apply the other settings, and
				// tell the operator how to upgrade.
				log.WarnContext(ctx, "stream retention cannot be changed in place; keeping it",
					"stream", s.name, "have", have.Retention.String(), "want", sc.Retention.String(),
					"fix", retentionFix(s.name, st.CachedInfo().State.Msgs))
				sc.Retention = have.Retention
			}
			// Every replica and service calls this at start: leave a stream that already has the
			// wanted settings alone instead of sending an update (an update also races, inside
			// nats-server v2.15, with consumers being created at the same moment).
			if sameSettings(have, sc) {
				continue
			}
		}
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("ensure stream %s (%s): %w", s.name, s.subject, err)
		}
	}
	// A stream found missing later (a lost store, an operator's delete) is recreated with cfg.
	rememberStreams(js, cfg, true)
	return nil
}

// retentionFix is the operator's way to move a stream created by an older Sagaflow (limits
// retention) to its current retention policy without losing a message.
func retentionFix(stream string, msgs uint64) string {
	return fmt.Sprintf("stop the relays (sagaflow serve/relay and the services' outboxes keep their rows), "+
		"wait until every consumer of %[1]s has no pending or unacknowledged messages (nats consumer report %[1]s), "+
		"then delete the stream (nats stream rm %[1]s; it holds %[2]d messages, already delivered and acked) "+
		"and start Sagaflow again: it recreates the stream and its consumers", stream, msgs)
}

// sameSettings reports whether a stream's current configuration has every setting EnsureStreams
// applies.
func sameSettings(have, want jetstream.StreamConfig) bool {
	return slices.Equal(have.Subjects, want.Subjects) && have.Storage == want.Storage &&
		have.Retention == want.Retention && have.Replicas == want.Replicas &&
		have.Duplicates == want.Duplicates && have.MaxAge == want.MaxAge
}
