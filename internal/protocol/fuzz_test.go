package protocol_test

import (
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/internal/protocol"
)

// headers turns "Key: value" lines into message metadata, the way NATS headers arrive.
func headers(blob string) message.Metadata {
	md := message.Metadata{}
	for line := range strings.Lines(blob) {
		if k, v, ok := strings.Cut(strings.TrimRight(line, "\r\n"), ": "); ok {
			md.Set(k, v)
		}
	}
	return md
}

const goodCommand = "Sagaflow-Saga-Id: s1\nSagaflow-Definition: order\nSagaflow-Definition-Version: 1\n" +
	"Sagaflow-Step: charge\nSagaflow-Attempt: 2\nSagaflow-Action: forward\nSagaflow-Reply-To: saga.reply.order\n"

// FuzzParseCommand: whatever a sender puts in a command's subject, headers and payload, ParseCommand
// returns a command or an error, never panics; a command it accepts survives encoding and parsing
// again unchanged.
func FuzzParseCommand(f *testing.F) {
	f.Add("saga.cmd.payment.Charge", goodCommand, []byte(`{"input":{}}`))
	f.Add("saga.cmd.payment", goodCommand, []byte(`{}`))
	f.Add("saga.cmd.payment.Charge", "Sagaflow-Attempt: -1\nSagaflow-Action: sideways\n", []byte(`{`))
	f.Add("saga.cmd..Charge", goodCommand+"Sagaflow-Business-Key: \x00\x1b[31m\n", []byte(nil))
	f.Add("x.y.z", "", []byte("not json"))
	f.Fuzz(func(t *testing.T, subject, hdrs string, payload []byte) {
		m := message.NewMessage("m-1", payload)
		m.Metadata = headers(hdrs)
		c, err := protocol.ParseCommand(subject, m)
		if err != nil {
			require.ErrorIs(t, err, protocol.ErrMalformed)
			return
		}
		again, err := protocol.ParseCommand(c.Subject(), c.Message())
		require.NoError(t, err, "an accepted command encodes to one that parses")
		c.Time, again.Time = again.Time, c.Time // ce-time is not part of the contract's round trip
		require.Equal(t, c, again)
	})
}

// FuzzParseReply: whatever a participant (or an attacker) sends as a reply, ParseReply returns a
// reply or an error, never panics; a reply it accepts survives encoding and parsing again.
func FuzzParseReply(f *testing.F) {
	good := "Sagaflow-Saga-Id: s1\nSagaflow-Definition: order\nSagaflow-Step: charge\nSagaflow-Attempt: 1\n" +
		"Sagaflow-Action: forward\nSagaflow-Outcome: success\n"
	f.Add(good, []byte(`{"output":{"id":7}}`))
	f.Add(strings.Replace(good, "success", "retrying", 1), []byte(`{"reason":"db down"}`))
	f.Add(strings.Replace(good, "success", "maybe", 1), []byte(`{"output":`))
	f.Add("Sagaflow-Attempt: 99999999999999999999\n", []byte(`[]`))
	f.Fuzz(func(t *testing.T, hdrs string, body []byte) {
		m := message.NewMessage("r-1", body)
		m.Metadata = headers(hdrs)
		r, err := protocol.ParseReply(m)
		if err != nil {
			return // a clear error is all that is asked of bad input
		}
		msg, err := r.Message()
		require.NoError(t, err)
		again, err := protocol.ParseReply(msg)
		require.NoError(t, err, "an accepted reply encodes to one that parses")
		require.Equal(t, r.SagaID, again.SagaID)
		require.Equal(t, r.Outcome, again.Outcome)
		require.Equal(t, r.Attempt, again.Attempt)
		require.Equal(t, r.Reason, again.Reason)
	})
}
