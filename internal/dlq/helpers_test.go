package dlq_test

import (
	"strconv"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func strconvU(n uint64) string { return strconv.FormatUint(n, 10) }

// toWatermill turns a stored message into what a Subscriber would hand a handler.
func toWatermill(m jetstream.Msg) *message.Message {
	msg := message.NewMessage(m.Headers().Get(nats.MsgIdHdr), m.Data())
	for k, v := range m.Headers() {
		msg.Metadata.Set(k, v[0])
	}
	return msg
}
