package bus

import (
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrPermanent marks a handler error that no redelivery can fix (a malformed message, say): wrap it
// (fmt.Errorf("...: %w", bus.ErrPermanent)) and DeadLetter moves the message to the dead-letter
// stream at once instead of waiting for MaxDeliver.
var ErrPermanent = errors.New("permanent failure")

// ErrClosed is returned by Publish and Subscribe after Close.
var ErrClosed = errors.New("bus: closed")

// ErrAckTimeout is the failure of a message whose PubAck did not arrive within AckTimeout.
var ErrAckTimeout = errors.New("bus: no publish acknowledgement within the ack timeout")

// MessageError is the failure to publish one message of a batch.
type MessageError struct {
	Index   int    // position of the message in the Publish call
	UUID    string // the message's UUID (its Nats-Msg-Id is MsgID(Subject, UUID))
	Subject string
	Err     error
}

func (e MessageError) Error() string {
	return fmt.Sprintf("publish message %s to %s: %v", e.UUID, e.Subject, e.Err)
}

func (e MessageError) Unwrap() error { return e.Err }

// PublishError is returned by Publisher.Publish when some messages of the batch were not
// acknowledged. The messages not listed were acknowledged by JetStream.
type PublishError struct {
	Failures []MessageError
}

func (e *PublishError) Error() string {
	const show = 3
	var b strings.Builder
	fmt.Fprintf(&b, "publish: %d message(s) not acknowledged", len(e.Failures))
	for i, f := range e.Failures {
		if i == show {
			fmt.Fprintf(&b, "; and %d more", len(e.Failures)-show)
			break
		}
		b.WriteString("; ")
		b.WriteString(f.Error())
	}
	return b.String()
}

// Unwrap returns every message's error, so errors.Is(err, nats.ErrDisconnected) works.
func (e *PublishError) Unwrap() []error {
	errs := make([]error, len(e.Failures))
	for i, f := range e.Failures {
		errs[i] = f
	}
	return errs
}

// NoStreamError is the failure of a message whose subject no JetStream stream captures: the
// server had no stream to answer the publish, and JetStream itself answered a lookup of the
// subject (StreamNameBySubject) with "no stream matches". Publisher returns it only for a subject
// outside Sagaflow's own streams (see OwnSubject); it is permanent (IsPermanentPublishError).
type NoStreamError struct {
	Subject string
	Err     error // the publish failure, jetstream.ErrNoStreamResponse
}

func (e *NoStreamError) Error() string {
	return fmt.Sprintf("no stream captures subject %s (%v)", e.Subject, e.Err)
}

func (e *NoStreamError) Unwrap() error { return e.Err }

// IsPermanentPublishError reports whether publishing a message failed because of the message itself
// (a subject NATS refuses, a subject no stream captures (*NoStreamError), a payload or header over
// the server's or stream's maximum, a request JetStream rejects as bad) so that retrying it cannot
// succeed. Everything else (a disconnected client, a timeout, no stream answering while JetStream
// restarts or one of Sagaflow's own streams is being recreated) is transient.
func IsPermanentPublishError(err error) bool {
	var noStream *NoStreamError
	if errors.Is(err, nats.ErrBadSubject) || errors.Is(err, nats.ErrMaxPayload) ||
		errors.Is(err, jetstream.ErrStreamMessageExceedsMaximum) || errors.As(err, &noStream) {
		return true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		// 400s are about the request (the message); 5xx and 503 "unavailable" are the server's state.
		return apiErr.Code == 400
	}
	return false
}
