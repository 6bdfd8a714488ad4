package telemetry

import (
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// A saga's spans cover time across processes and replicas: a step's span starts when one replica
// sends the command and ends when another applies its reply, and participants must name it as
// their parent before it ends. So the engine fixes each span's id in advance (derived from the
// saga id, the step and the attempt), puts it in the command's traceparent, and records the span
// when its end is known with that id and its true start time. The OpenTelemetry API has no way to
// choose a span's id; the SDK's IDGenerator is the hook, and NewIDGenerator returns one that
// honours ids requested through WithIDs.

type idsKey struct{}

type wantedIDs struct {
	trace trace.TraceID
	span  trace.SpanID
	// used is set by the first span that takes the ids: the context a span start returns carries
	// the request too, and the spans started under it must not get the same id.
	used *atomic.Bool
}

// take returns the wanted ids in ctx, once.
func take(ctx context.Context) (wantedIDs, bool) {
	w, ok := ctx.Value(idsKey{}).(wantedIDs)
	if !ok || !w.used.CompareAndSwap(false, true) {
		return wantedIDs{}, false
	}
	return w, true
}

// WithIDs returns ctx asking the next span started with it (on a tracer provider built with
// NewIDGenerator) to get spanID, and, when it is a root span, traceID. Only that one span gets
// them; spans started later under the same context get random ids.
func WithIDs(ctx context.Context, traceID trace.TraceID, spanID trace.SpanID) context.Context {
	return context.WithValue(ctx, idsKey{}, wantedIDs{trace: traceID, span: spanID, used: new(atomic.Bool)})
}

// NewIDGenerator returns the ID generator the engine's tracer provider must be built with
// (sdktrace.WithIDGenerator): random ids as the SDK's default, except for spans started with a
// context from WithIDs.
func NewIDGenerator() sdktrace.IDGenerator {
	var seed [32]byte
	_, _ = crand.Read(seed[:])
	return &idGenerator{rng: rand.New(rand.NewChaCha8(seed))}
}

type idGenerator struct {
	mu  sync.Mutex
	rng *rand.Rand
}

func (g *idGenerator) NewIDs(ctx context.Context) (trace.TraceID, trace.SpanID) {
	if w, ok := take(ctx); ok && w.trace.IsValid() && w.span.IsValid() {
		return w.trace, w.span
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	var tid trace.TraceID
	var sid trace.SpanID
	for !tid.IsValid() {
		binary.NativeEndian.PutUint64(tid[:8], g.rng.Uint64())
		binary.NativeEndian.PutUint64(tid[8:], g.rng.Uint64())
	}
	for !sid.IsValid() {
		binary.NativeEndian.PutUint64(sid[:], g.rng.Uint64())
	}
	return tid, sid
}

func (g *idGenerator) NewSpanID(ctx context.Context, traceID trace.TraceID) trace.SpanID {
	if w, ok := take(ctx); ok && w.span.IsValid() {
		return w.span
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	var sid trace.SpanID
	for !sid.IsValid() {
		binary.NativeEndian.PutUint64(sid[:], g.rng.Uint64())
	}
	return sid
}

// DerivedSpanID returns a span id determined by parts: the same parts give the same id on every
// replica and after every restart.
func DerivedSpanID(parts ...string) trace.SpanID {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	var sid trace.SpanID
	copy(sid[:], h.Sum(nil))
	if !sid.IsValid() {
		sid[7] = 1
	}
	return sid
}

// NewTraceID returns a random, valid trace id.
func NewTraceID() trace.TraceID {
	var tid trace.TraceID
	for !tid.IsValid() {
		_, _ = crand.Read(tid[:])
	}
	return tid
}
