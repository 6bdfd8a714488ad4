package bus

import (
	"context"
	"errors"
	"log/slog"
	"strconv"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/sagaflow/sagaflow/internal/telemetry"
)

// Headers DeadLetter adds to a dead-lettered message.
const (
	// HeaderDLQReason is the text of the handler's last error.
	HeaderDLQReason = "Sagaflow-Dlq-Reason"
	// HeaderDLQSubject is the subject the message arrived on.
	HeaderDLQSubject = "Sagaflow-Dlq-Subject"
	// HeaderDLQDeliveries is how many times it was delivered.
	HeaderDLQDeliveries = "Sagaflow-Dlq-Deliveries"
)

// DeadLetter is Watermill router middleware for messages from a Subscriber. When the handler fails
// and either the error wraps ErrPermanent or this was delivery maxDeliver (or later; the
// Subscriber's MaxDeliver), it publishes the message through pub with the topic
// ns.Subject("saga.dlq.")+<original subject> (saga.dlq.<original subject>;
// acme.saga.dlq.acme.saga.cmd.… in namespace acme; the original subject is the message's
// SubjectKey) with its headers plus HeaderDLQReason, HeaderDLQSubject and HeaderDLQDeliveries, and
// acks it. Other failures pass through (the message is nacked and redelivered). If the dead-letter
// publish fails, the message is nacked so it is not lost.
//
// It is built on Watermill's PoisonQueue (which also adds its reason_poisoned, topic_poisoned,
// handler_poisoned and subscriber_poisoned headers), made for each dead letter with its topic;
// what it adds is the decision per delivery count and the per-message dead-letter subject.
//
// onDeadLetter, when not nil, is called with each message once it is safely in the dead-letter
// stream (its headers name the reason), to count and log it.
func DeadLetter(pub message.Publisher, ns Namespace, maxDeliver int, onDeadLetter func(*message.Message)) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			out, err := h(msg)
			if err == nil {
				return out, nil
			}
			deliveries, _ := strconv.Atoi(msg.Metadata.Get(DeliveryKey))
			if !errors.Is(err, ErrPermanent) && deliveries < maxDeliver {
				return out, err
			}
			subject := msg.Metadata.Get(SubjectKey)
			msg.Metadata.Set(HeaderDLQReason, err.Error())
			msg.Metadata.Set(HeaderDLQSubject, subject)
			msg.Metadata.Set(HeaderDLQDeliveries, strconv.Itoa(deliveries))
			if subject == "" {
				subject = "unknown"
			}
			poison, perr := middleware.PoisonQueue(pub, ns.Subject(DLQPrefix)+subject)
			if perr != nil {
				return out, errors.Join(err, perr) // unreachable: the topic is never empty
			}
			failed := func(*message.Message) ([]*message.Message, error) { return out, err }
			out, err = poison(failed)(msg)
			if err == nil && onDeadLetter != nil {
				onDeadLetter(msg)
			}
			return out, err
		}
	}
}

// DeadLetterCounter returns an onDeadLetter function for DeadLetter that counts the messages
// consumer dead-letters in sagaflow.dead_lettered{consumer} and logs each at warning level with its
// trace, subject, deliveries and reason, plus the attributes logAttrs reads from its headers (the
// saga protocol's saga, definition and step: the bus knows nothing of sagas); logAttrs may be nil.
func DeadLetterCounter(mp metric.MeterProvider, log *slog.Logger, consumer string, logAttrs func(message.Metadata) []any) func(*message.Message) {
	report := deadLetterReporter(mp, log, consumer, logAttrs)
	return func(msg *message.Message) { report(msg.Context(), msg.Metadata) }
}

// deadLetterReporter returns the function that counts a message consumer dead-lettered, with the
// headers md it was stored with, in sagaflow.dead_lettered{consumer} and logs it at warning level
// (with the attributes logAttrs reads from md, when logAttrs is not nil).
func deadLetterReporter(mp metric.MeterProvider, log *slog.Logger, consumer string, logAttrs func(message.Metadata) []any) func(context.Context, message.Metadata) {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	counter, _ := mp.Meter(meterScope).Int64Counter("sagaflow.dead_lettered",
		metric.WithUnit("{message}"), metric.WithDescription("Messages moved to the dead-letter stream (SAGA_DLQ), per consumer."))
	attrs := metric.WithAttributes(attribute.String("consumer", consumer))
	return func(ctx context.Context, md message.Metadata) {
		counter.Add(ctx, 1, attrs)
		fields := []any{"consumer", consumer}
		if logAttrs != nil {
			fields = append(fields, logAttrs(md)...)
		}
		fields = append(fields, "trace_id", telemetry.SpanContextOf(md).TraceID().String(), "subject", md.Get(HeaderDLQSubject),
			"deliveries", md.Get(HeaderDLQDeliveries), "reason", md.Get(HeaderDLQReason))
		log.WarnContext(ctx, "message dead-lettered", fields...)
	}
}
