package telemetry

import (
	"context"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Propagator carries the W3C trace context and baggage in message headers (lowercase
// "traceparent", "tracestate", "baggage"; NATS headers keep their case). It is fixed rather than
// taken from otel.GetTextMapPropagator, whose default propagates nothing.
var Propagator propagation.TextMapPropagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// Inject writes the trace context of ctx into md, unless ctx holds no valid span context or md
// already carries a traceparent (a message whose producer set its own parent keeps it).
func Inject(ctx context.Context, md message.Metadata) {
	if md == nil || md.Get("traceparent") != "" || !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	Propagator.Inject(ctx, propagation.MapCarrier(md))
}

// Extract returns ctx with the remote span context (and baggage) carried by md.
func Extract(ctx context.Context, md message.Metadata) context.Context {
	if md == nil {
		return ctx
	}
	return Propagator.Extract(ctx, propagation.MapCarrier(md))
}

// SpanContextOf returns the span context carried by md, invalid when there is none.
func SpanContextOf(md message.Metadata) trace.SpanContext {
	return trace.SpanContextFromContext(Extract(context.Background(), md))
}
