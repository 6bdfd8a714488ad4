package outbox

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/telemetry"
)

const instrumentationName = "github.com/sagaflow/sagaflow/outbox"

// relayTelemetry is a relay's tracer and instruments; attrs names its outbox.
type relayTelemetry struct {
	tracer      trace.Tracer
	meter       metric.Meter
	attrs       metric.MeasurementOption
	published   metric.Int64Counter
	quarantined metric.Int64Counter
	backlog     metric.Int64ObservableGauge
	oldestAge   metric.Float64ObservableGauge
	parked      metric.Int64ObservableGauge
}

func newRelayTelemetry(cfg RelayConfig) relayTelemetry {
	m := cfg.MeterProvider.Meter(instrumentationName)
	t := relayTelemetry{
		tracer: cfg.TracerProvider.Tracer(instrumentationName),
		meter:  m,
		attrs:  metric.WithAttributes(attribute.String("outbox", cfg.Name)),
	}
	// Instrument creation fails only on an invalid name or unit, which these constants are not; the
	// SDK then still returns a usable no-op instrument.
	t.published, _ = m.Int64Counter("sagaflow.relay.published", metric.WithUnit("{message}"),
		metric.WithDescription("Outbox messages published to JetStream and acknowledged."))
	t.quarantined, _ = m.Int64Counter("sagaflow.relay.quarantined", metric.WithUnit("{message}"),
		metric.WithDescription("Outbox messages refused by the bus MaxAttempts times and set aside for an operator."))
	t.backlog, _ = m.Int64ObservableGauge("sagaflow.outbox.backlog", metric.WithUnit("{message}"),
		metric.WithDescription("Committed outbox messages not yet published (quarantined excluded)."))
	t.oldestAge, _ = m.Float64ObservableGauge("sagaflow.outbox.oldest_unpublished_age", metric.WithUnit("s"),
		metric.WithDescription("Age of the oldest committed outbox message not yet published; 0 when none."))
	t.parked, _ = m.Int64ObservableGauge("sagaflow.outbox.quarantined", metric.WithUnit("{message}"),
		metric.WithDescription("Quarantined outbox messages waiting for an operator."))
	return t
}

// observeBacklog registers the callback that reads the backlog gauges from the database at each
// collection; the caller unregisters it.
func (r *Relay) observeBacklog() (metric.Registration, error) {
	t := &r.tel
	return t.meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		backlog, oldest, quarantined, err := r.store.stats(ctx, r.db)
		if err != nil {
			return fmt.Errorf("outbox %s backlog: %w", r.cfg.Name, err)
		}
		o.ObserveInt64(t.backlog, backlog, t.attrs)
		o.ObserveFloat64(t.oldestAge, oldest.Seconds(), t.attrs)
		o.ObserveInt64(t.parked, quarantined, t.attrs)
		return nil
	}, t.backlog, t.oldestAge, t.parked)
}

// countPublished adds a recorded batch's published messages to the counters.
func (r *Relay) countPublished(ctx context.Context, res outcome) {
	r.published.Add(int64(res.published))
	r.tel.published.Add(ctx, int64(res.published), r.tel.attrs)
}

// startPublishSpan starts the span of one batch publish: a new root (the messages belong to many
// traces) linked to the trace context each message carries.
func (r *Relay) startPublishSpan(ctx context.Context, msgs []bus.Message) trace.Span {
	links := make([]trace.Link, 0, len(msgs))
	for _, m := range msgs {
		if sc := telemetry.SpanContextOf(m.Headers); sc.IsValid() {
			links = append(links, trace.Link{SpanContext: sc})
		}
	}
	name := "send"
	attrs := telemetry.BatchSendAttributes(len(msgs))
	if len(msgs) == 1 {
		name += " " + msgs[0].Subject
		attrs = telemetry.SendAttributes(msgs[0].Subject, msgs[0].ID)
	}
	_, span := r.tel.tracer.Start(ctx, name, trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithLinks(links...), trace.WithAttributes(append(attrs, attribute.String("sagaflow.outbox", r.cfg.Name))...))
	return span
}

func endPublishSpan(span trace.Span, res outcome) {
	if len(res.failed) > 0 {
		span.SetStatus(codes.Error, fmt.Sprintf("%d of the batch not published", len(res.failed)))
	}
	span.End()
}
