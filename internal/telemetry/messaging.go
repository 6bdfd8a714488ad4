package telemetry

import (
	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// Attribute keys of Sagaflow's own span attributes and log fields.
const (
	SagaIDKey      = attribute.Key("sagaflow.saga_id")
	DefinitionKey  = attribute.Key("sagaflow.definition")
	VersionKey     = attribute.Key("sagaflow.definition_version")
	BusinessKeyKey = attribute.Key("sagaflow.business_key")
	StepKey        = attribute.Key("sagaflow.step")
	AttemptKey     = attribute.Key("sagaflow.attempt")
	ActionKey      = attribute.Key("sagaflow.action")
	ServiceKey     = attribute.Key("sagaflow.service")
	CommandKey     = attribute.Key("sagaflow.command")
	OutcomeKey     = attribute.Key("sagaflow.outcome")
	StatusKey      = attribute.Key("sagaflow.status")
)

// messagingSystem is messaging.system for NATS; the semantic conventions have no enum member for it.
var messagingSystem = semconv.MessagingSystemKey.String("nats")

// SendAttributes are the messaging attributes of a span that sends message id to destination.
func SendAttributes(destination, id string) []attribute.KeyValue {
	return []attribute.KeyValue{
		messagingSystem,
		semconv.MessagingOperationTypeSend,
		semconv.MessagingOperationName("send"),
		semconv.MessagingDestinationName(destination),
		semconv.MessagingMessageID(id),
	}
}

// ProcessAttributes are the messaging attributes of a span that processes message id, received
// from destination through the durable consumer group.
func ProcessAttributes(destination, id, group string, bodySize int) []attribute.KeyValue {
	return []attribute.KeyValue{
		messagingSystem,
		semconv.MessagingOperationTypeProcess,
		semconv.MessagingOperationName("process"),
		semconv.MessagingDestinationName(destination),
		semconv.MessagingMessageID(id),
		semconv.MessagingConsumerGroupName(group),
		semconv.MessagingMessageBodySize(bodySize),
	}
}

// BatchSendAttributes are the attributes of a span that sends a batch of n messages.
func BatchSendAttributes(n int) []attribute.KeyValue {
	return []attribute.KeyValue{
		messagingSystem,
		semconv.MessagingOperationTypeSend,
		semconv.MessagingOperationName("send"),
		semconv.MessagingBatchMessageCount(n),
	}
}
