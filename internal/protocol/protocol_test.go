package protocol_test

import (
	"encoding/json"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/internal/protocol"
)

func TestCommandRoundTrip(t *testing.T) {
	t.Parallel()
	c := protocol.Command{
		MessageID: "m1", SagaID: "s1", Definition: "order-fulfilment", Version: 2, BusinessKey: "o-1",
		Step: "charge-payment", Attempt: 3, Generation: 2, Action: protocol.ActionCompensate, Service: "payment",
		Name: "RefundPayment", ReplyTo: protocol.ReplySubject("order-fulfilment"),
		Payload: json.RawMessage(`{"input":{"amount":5},"steps":{}}`),
	}
	m := c.Message()
	require.Equal(t, "saga.cmd.payment.RefundPayment", c.Subject())
	require.Equal(t, "1.0", m.Metadata.Get(protocol.HeaderCESpecVersion))
	require.Equal(t, "2", m.Metadata.Get(protocol.HeaderGeneration))
	got, err := protocol.ParseCommand(c.Subject(), m)
	require.NoError(t, err)
	require.Equal(t, c, got)
}

func TestReplyRoundTrip(t *testing.T) {
	t.Parallel()
	c := protocol.Command{SagaID: "s1", Definition: "d", Version: 3, Step: "a", Attempt: 1, Action: protocol.ActionForward, Service: "svc"}
	r := c.Answer(protocol.OutcomeSuccess)
	require.Equal(t, 3, r.Version, "a reply carries its command's definition version")
	r.MessageID, r.Output = "r1", json.RawMessage(`{"id":7}`)
	m, err := r.Message()
	require.NoError(t, err)
	got, err := protocol.ParseReply(m)
	require.NoError(t, err)
	r.Service = "" // not carried in headers except ce-source
	require.Equal(t, r, got)
}

func TestParseRejectsMalformed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		subject string
		md      message.Metadata
		payload string
		want    string
	}{
		{"NoHeaders", "saga.cmd.a.B", message.Metadata{}, `{}`, "Sagaflow-Saga-Id is missing"},
		{"BadSubject", "saga.cmd.a", message.Metadata{}, `{}`, "is not saga.cmd.<service>.<command>"},
		{"BadAttempt", "saga.cmd.a.B", message.Metadata{protocol.HeaderAttempt: "zero"}, `{}`, `Sagaflow-Attempt is "zero"`},
		{"BadAction", "saga.cmd.a.B", message.Metadata{protocol.HeaderAction: "undo"}, `{}`, `Sagaflow-Action is "undo"`},
		{"BadGeneration", "saga.cmd.a.B", message.Metadata{protocol.HeaderGeneration: "-1"}, `{}`, `Sagaflow-Step-Generation is "-1"`},
		{"NotJSON", "saga.cmd.a.B", message.Metadata{}, `{nope`, "payload is not JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := message.NewMessage("x", []byte(tt.payload))
			m.Metadata = tt.md
			_, err := protocol.ParseCommand(tt.subject, m)
			require.ErrorIs(t, err, protocol.ErrMalformed)
			require.ErrorContains(t, err, tt.want)
		})
	}
	m := message.NewMessage("x", []byte(`{}`))
	m.Metadata = message.Metadata{protocol.HeaderSagaID: "s", protocol.HeaderStep: "a", protocol.HeaderAttempt: "1", protocol.HeaderAction: "forward", protocol.HeaderOutcome: "maybe"}
	_, err := protocol.ParseReply(m)
	require.ErrorContains(t, err, `Sagaflow-Outcome is "maybe"`)
	require.ErrorContains(t, err, "Sagaflow-Definition is missing")
	m.Metadata.Set(protocol.HeaderDefinition, "d")
	m.Metadata.Set(protocol.HeaderOutcome, "success")
	m.Metadata.Set(protocol.HeaderVersion, "v2")
	_, err = protocol.ParseReply(m)
	require.ErrorIs(t, err, protocol.ErrMalformed)
	require.ErrorContains(t, err, `Sagaflow-Definition-Version is "v2"`)
	delete(m.Metadata, protocol.HeaderVersion)
	got, err := protocol.ParseReply(m)
	require.NoError(t, err, "a reply without a version header is still accepted")
	require.Zero(t, got.Version)
}
