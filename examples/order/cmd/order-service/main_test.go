package main

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/examples/order"
	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/natstest"
	"github.com/sagaflow/sagaflow/internal/protocol"
	"github.com/sagaflow/sagaflow/internal/sqlitetest"
)

func TestParseValidates(t *testing.T) {
	t.Parallel()
	_, err := parse([]string{"--payment-decline-rate", "2"})
	require.Error(t, err)
	for _, want := range []string{"--service is required", "--db is required", "--payment-decline-rate 2: want 0..1"} {
		require.Contains(t, err.Error(), want)
	}
	f, err := parse([]string{"--service", "payment", "--db", "sqlite:x.db", "--latency", "2s", "--unavailable-rate", "0.5"})
	require.NoError(t, err)
	require.Equal(t, order.Faults{Latency: 2 * time.Second, UnavailableRate: 0.5}, f.opts.Faults["payment"])
}

// TestRunAnswersCommands runs the payment service's process wiring against a real JetStream and an
// SQLite file, sends it a ChargePayment command, and reads the reply its relay publishes.
func TestRunAnswersCommands(t *testing.T) {
	t.Parallel()
	srv := natstest.New(t, nil)
	f, err := parse([]string{"--service", "payment", "--db", "sqlite:" + sqlitetest.Path(t), "--nats", srv.URL(), "--log-level", "warn"})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- run(ctx, f) }()

	js := srv.JetStream(t)
	require.NoError(t, bus.EnsureStreams(t.Context(), js, bus.StreamsConfig{}))
	in, _ := json.Marshal(map[string]any{"input": order.Input{OrderID: "o-1", Customer: "c", Items: []order.Item{{SKU: "sku-fig", Qty: 1}}, AmountCents: 250}})
	cmd := protocol.Command{MessageID: "m-1", SagaID: "s-1", Definition: order.Definition, Version: 1, Step: "charge-payment", Attempt: 1,
		Action: protocol.ActionForward, Service: "payment", Name: "ChargePayment", ReplyTo: protocol.ReplySubject(order.Definition), Payload: in}
	pub, err := bus.NewPublisher(js, bus.PublisherConfig{})
	require.NoError(t, err)
	defer pub.Close()
	require.NoError(t, pub.Publish(cmd.Subject(), cmd.Message()))

	c, err := js.OrderedConsumer(t.Context(), bus.StreamReplies, jetstream.OrderedConsumerConfig{})
	require.NoError(t, err)
	m, err := c.Next(jetstream.FetchMaxWait(30 * time.Second))
	require.NoError(t, err)
	require.Equal(t, "success", m.Headers().Get(protocol.HeaderOutcome))
	require.Equal(t, "s-1", m.Headers().Get(protocol.HeaderSagaID))
	require.Contains(t, string(m.Data()), `"amount_cents":250`)

	cancel()
	require.NoError(t, <-done)
}
