package bus

import (
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

func TestOwnSubject(t *testing.T) {
	t.Parallel()
	tests := []struct {
		subject string
		want    bool
	}{
		{"saga.cmd.order.CreateOrder", true},
		{"saga.reply.order", true},
		{"events.order.placed", true},
		{"saga.dlq.saga.reply.order", true},
		{"x.y.z", false},
		{"saga.replyx", false},
		{"saga.reply.", false}, // not a subject of saga.reply.> (no token after the prefix)
		{"events", false},
		{"orders.placed", false},
	}
	for _, tt := range tests {
		t.Run(tt.subject, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, OwnSubject(tt.subject))
		})
	}
}

func TestNoStreamIsPermanent(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		subject   string
		lookupErr error
		want      bool
	}{
		{"ForeignSubjectNoStreamMatches", "x.y.z", jetstream.ErrStreamNotFound, true},
		{"ForeignSubjectWrappedNotFound", "x.y.z", fmt.Errorf("lookup: %w", jetstream.ErrStreamNotFound), true},
		{"ForeignSubjectJetStreamUnavailable", "x.y.z", nats.ErrNoResponders, false},
		{"ForeignSubjectJetStreamNotEnabled", "x.y.z", jetstream.ErrJetStreamNotEnabled, false},
		{"ForeignSubjectLookupTimeout", "x.y.z", nats.ErrTimeout, false},
		{"ForeignSubjectStreamExistsNow", "x.y.z", nil, false},
		{"OwnStreamMissingIsAnOutage", "saga.reply.order", jetstream.ErrStreamNotFound, false},
		{"OwnCommandsStreamMissing", "saga.cmd.a.B", jetstream.ErrStreamNotFound, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, noStreamIsPermanent("", tt.subject, tt.lookupErr))
		})
	}
}

func TestIsPermanentPublishError(t *testing.T) {
	t.Parallel()
	headerTooBig := &jetstream.APIError{Code: 400, ErrorCode: 10097, Description: "header size exceeds maximum allowed of 64k"}
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"NoStream", &NoStreamError{Subject: "x.y.z", Err: jetstream.ErrNoStreamResponse}, true},
		{"NoStreamInABatch", &PublishError{Failures: []MessageError{{Subject: "x.y.z", Err: &NoStreamError{Subject: "x.y.z", Err: jetstream.ErrNoStreamResponse}}}}, true},
		{"HeaderOverLimit", headerTooBig, true},
		{"MaxPayload", nats.ErrMaxPayload, true},
		{"BadSubject", nats.ErrBadSubject, true},
		{"NoResponseFromStream", jetstream.ErrNoStreamResponse, false},
		{"AckTimeout", ErrAckTimeout, false},
		{"Disconnected", nats.ErrConnectionClosed, false},
		{"Unavailable", &jetstream.APIError{Code: 503, Description: "unavailable"}, false},
		{"Other", errors.New("boom"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, IsPermanentPublishError(tt.err))
		})
	}
}
