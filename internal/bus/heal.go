package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"time"
	"weak"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Self-healing: a stream or durable consumer can vanish under a running process (an operator
// deleted it, the JetStream store was lost, a cluster was reset). nats.go does not recreate
// either: a pull iterator on a missing consumer reports missing heartbeats forever and a publish
// to a missing stream fails with "no response from stream". The Subscriber and the Publisher
// therefore notice the loss and recreate what is missing, with the settings the process last
// applied or saw (see rememberStreams), each recreation logged at Warn and counted in
// RecreatedMetric.

// RecreatedMetric counts the streams and durable consumers this process found missing and
// recreated, with the attributes kind ("stream" or "consumer") and name (the stream's name, or
// "<stream>/<consumer>"); Prometheus: sagaflow_bus_recreated_total. newHealer repeats the literal,
// where internal/deploytest finds it.
const RecreatedMetric = "sagaflow.bus.recreated"

// meterScope is the instrumentation scope of this package's metrics.
const meterScope = "github.com/sagaflow/sagaflow/internal/bus"

// Kinds of recreated bus resources (the kind attribute of RecreatedMetric).
const (
	kindStream   = "stream"
	kindConsumer = "consumer"
)

// settleTime is how long a stream or consumer must have been seen missing before it is recreated.
// nats-server (v2.15) answers the pull requests of a consumer being deleted, and unregisters it,
// before it removes its directory from the store: a consumer (or stream) recreated under the same
// name inside that window has its fresh directory removed under it and fails later ("meta.inf.tmp:
// no such file or directory"). Waiting a moment after first seeing the loss lets the deletion
// finish; a lost store (a server restarted empty) has no deletion in flight and costs only this.
const settleTime = time.Second

// errNotSettled is returned while a missing stream or consumer waits out settleTime.
var errNotSettled = errors.New("missing; waiting for its deletion to settle before recreating it")

// healer recreates missing streams and consumers for one Publisher or Subscriber: it logs and
// counts each recreation.
type healer struct {
	js      jetstream.JetStream
	log     *slog.Logger
	counter metric.Int64Counter

	mu           sync.Mutex
	missingSince map[string]time.Time // stream or "stream/consumer" → when first seen missing
}

// settled records that key is missing (or, with missing false, present) and reports whether it
// has been missing for settleTime, so that it may be recreated.
func (h *healer) settled(key string, missing bool) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !missing {
		delete(h.missingSince, key)
		return false
	}
	since, ok := h.missingSince[key]
	if !ok || time.Since(since) > time.Minute { // an old sighting: it came back in between
		h.missingSince[key] = time.Now()
		return false
	}
	return time.Since(since) >= settleTime
}

func newHealer(js jetstream.JetStream, log *slog.Logger, mp metric.MeterProvider) *healer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	counter, _ := mp.Meter(meterScope).Int64Counter("sagaflow.bus.recreated", metric.WithUnit("{resource}"),
		metric.WithDescription("JetStream streams and durable consumers found missing and recreated by this process (kind=stream|consumer)."))
	return &healer{js: js, log: log, counter: counter, missingSince: map[string]time.Time{}}
}

func (h *healer) recreated(ctx context.Context, kind, name string, attrs ...any) {
	h.counter.Add(ctx, 1, metric.WithAttributes(attribute.String("kind", kind), attribute.String("name", name)))
	h.log.WarnContext(ctx, "bus "+kind+" was missing; recreated", append([]any{kind, name}, attrs...)...)
}

// ensureStream creates the Sagaflow stream name when it does not exist, with the settings
// remembered for the connection (streamsFor). It reports whether it created it. A stream is
// recreated only once it has been seen missing for settleTime: until then ensureStream returns
// errNotSettled, and the caller tries again.
func (h *healer) ensureStream(ctx context.Context, name string) (bool, error) {
	_, err := h.js.Stream(ctx, name)
	if err == nil {
		h.settled(name, false)
		return false, nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return false, fmt.Errorf("look up stream %s: %w", name, err)
	}
	if !h.settled(name, true) {
		return false, fmt.Errorf("stream %s: %w", name, errNotSettled)
	}
	settings := streamsFor(h.js)
	sc, err := StreamConfig(name, settings)
	if err != nil {
		return false, fmt.Errorf("recreate stream %s: %w", name, err)
	}
	if _, err := h.js.CreateStream(ctx, sc); err != nil {
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			h.settled(name, false)
			return false, nil // another process recreated it a moment ago
		}
		return false, fmt.Errorf("recreate stream %s: %w", name, err)
	}
	h.settled(name, false)
	settings = settings.withDefaults()
	h.recreated(ctx, kindStream, name, "subjects", sc.Subjects, "replicas", settings.Replicas, "duplicates", settings.Duplicates)
	return true, nil
}

// StreamOf returns the Sagaflow stream (without a namespace) that captures subject, or false when
// none of them does. Namespace.StreamOf is the same in a namespace.
func StreamOf(subject string) (string, bool) { return Namespace("").StreamOf(subject) }

// MissingStreams returns the names of Sagaflow's streams (in the namespace EnsureStreams applied on
// js's connection) that do not exist on the server js talks to (none: all present). It fails when
// it cannot tell (JetStream unreachable).
func MissingStreams(ctx context.Context, js jetstream.JetStream) ([]string, error) {
	var missing []string
	for _, s := range streamsFor(js).Namespace.streams() {
		_, err := js.Stream(ctx, s.name)
		switch {
		case err == nil:
		case errors.Is(err, jetstream.ErrStreamNotFound):
			missing = append(missing, s.name)
		default:
			return nil, fmt.Errorf("look up stream %s: %w", s.name, err)
		}
	}
	return missing, nil
}

// streamHealInterval is the least time between two attempts of one Publisher to recreate missing
// streams: a relay retrying a batch every few hundred milliseconds must not flood JetStream's API.
const streamHealInterval = time.Second

// streamHealTimeout bounds one such attempt.
const streamHealTimeout = 10 * time.Second

// publishFailedForNoStream reports whether a publish failed because no stream took its subject
// (nats.go: ErrNoStreamResponse, the server's "no responders").
func publishFailedForNoStream(err error) bool {
	return errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrStreamNotFound)
}

// streamHeal is the Publisher's part: rate-limited recreation of the Sagaflow streams its
// failed messages were meant for.
type streamHeal struct {
	*healer
	mu   sync.Mutex
	last time.Time
}

// healStreams recreates the Sagaflow streams that failures were published to when they failed
// because no stream took them. It changes nothing about the failures: they stay failed and the
// caller retries them; messages for subjects outside Sagaflow's streams are left alone. At most one
// attempt runs at a time, and at most one per streamHealInterval.
func (h *streamHeal) healStreams(failures []MessageError) {
	var names []string
	for _, f := range failures {
		if !publishFailedForNoStream(f.Err) {
			continue
		}
		if name, ok := streamsFor(h.js).Namespace.StreamOf(f.Subject); ok && !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	if len(names) == 0 || !h.mu.TryLock() {
		return
	}
	defer h.mu.Unlock()
	if time.Since(h.last) < streamHealInterval {
		return
	}
	h.last = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), streamHealTimeout)
	defer cancel()
	for _, name := range names {
		if _, err := h.ensureStream(ctx, name); err != nil && !errors.Is(err, errNotSettled) {
			h.log.WarnContext(ctx, "recreate missing stream failed; retrying with the next publish", "stream", name, "err", err)
		}
	}
}

// knownStreams remembers, per NATS connection, the StreamsConfig the process applied with
// EnsureStreams or, failing that, read from a stream when a Subscriber started, so a stream found
// missing later is recreated the way it was (replicas, duplicate window, max age) and not with
// defaults. Keys are weak pointers: an entry goes when its connection is collected.
var knownStreams sync.Map // weak.Pointer[nats.Conn] → StreamsConfig

// rememberStreams records cfg for js's connection; with authoritative false it only fills an
// empty entry (an observation does not override what EnsureStreams applied).
func rememberStreams(js jetstream.JetStream, cfg StreamsConfig, authoritative bool) {
	nc := js.Conn()
	if nc == nil {
		return
	}
	key := weak.Make(nc)
	var loaded bool
	if authoritative {
		_, loaded = knownStreams.Swap(key, cfg)
	} else {
		var have any
		have, loaded = knownStreams.LoadOrStore(key, cfg)
		// An observation fills in the settings of an entry that only names the namespace
		// (RememberNamespace), of the same namespace.
		if loaded && have == (StreamsConfig{Namespace: cfg.Namespace}) {
			knownStreams.CompareAndSwap(key, have, cfg)
		}
	}
	if !loaded {
		runtime.AddCleanup(nc, func(k weak.Pointer[nats.Conn]) { knownStreams.Delete(k) }, key)
	}
}

// RememberNamespace records ns for js's connection when nothing is recorded for it yet, so that
// Publishers and Subscribers on it recognise and recreate the streams of ns even where
// EnsureStreams is not called (a process without the permission to manage streams); the other
// settings stay the defaults until a Subscriber reads them from an existing stream. The engine and
// the participant call it; the empty namespace needs no call.
func RememberNamespace(js jetstream.JetStream, ns Namespace) {
	if ns != "" {
		rememberStreams(js, StreamsConfig{Namespace: ns}, false)
	}
}

// streamsFor returns the StreamsConfig remembered for js's connection, or the zero value (the
// defaults) when none is.
func streamsFor(js jetstream.JetStream) StreamsConfig {
	nc := js.Conn()
	if nc == nil {
		return StreamsConfig{}
	}
	if cfg, ok := knownStreams.Load(weak.Make(nc)); ok {
		return cfg.(StreamsConfig)
	}
	return StreamsConfig{}
}

// observedStreams returns the StreamsConfig settings a stream's configuration tells: replicas and
// duplicate window from any stream, a max age only from the stream it belongs to (the work-queue
// streams have none, and must not make a recreated EVENTS or SAGA_DLQ lose theirs).
func observedStreams(c jetstream.StreamConfig) StreamsConfig {
	o := StreamsConfig{Replicas: c.Replicas, Duplicates: c.Duplicates}
	var base string
	if len(c.Subjects) == 1 {
		o.Namespace, base, _ = namespaceOf(streamSubject{c.Name, c.Subjects[0]})
	}
	if base == "" {
		base = c.Name // subjects changed by hand: judge by the name, as before namespaces
	}
	switch base {
	case StreamEvents:
		o.MaxAge = c.MaxAge
	case StreamDLQ:
		o.DLQMaxAge = c.MaxAge
	}
	return o
}

// KeepStreams checks every interval (default 5s) that each of Sagaflow's streams exists and
// recreates those that do not, with the settings EnsureStreams applied on js's connection, until
// ctx ends. A node runs it so that streams nobody happens to publish to or consume from yet (the
// dead-letter stream after a lost store, say) come back too, and readiness (MissingStreams) turns
// true again by itself. Failures (NATS down) are retried at the next tick.
func KeepStreams(ctx context.Context, js jetstream.JetStream, interval time.Duration, log *slog.Logger, mp metric.MeterProvider) {
	if interval <= 0 {
		interval = 5 * time.Second
	}
	h := newHealer(js, log, mp)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if js.Conn().Status() != nats.CONNECTED {
			continue
		}
		for _, s := range streamsFor(js).Namespace.streams() {
			cctx, cancel := context.WithTimeout(ctx, streamHealTimeout)
			_, err := h.ensureStream(cctx, s.name)
			cancel()
			if err != nil && ctx.Err() == nil {
				h.log.DebugContext(ctx, "check stream", "stream", s.name, "err", err)
			}
		}
	}
}
