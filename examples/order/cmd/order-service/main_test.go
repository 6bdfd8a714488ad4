package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/examples/order"
	"github.com/sagaflow/sagaflow/examples/order/internal/ordertest"
	"github.com/sagaflow/sagaflow/outbox"
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
// SQLite file, sends it a ChargePayment command written from the README's message contract with a
// plain NATS client, and reads the reply its relay publishes.
func TestRunAnswersCommands(t *testing.T) {
	t.Parallel()
	srv := ordertest.NATS(t)
	f, err := parse([]string{"--service", "payment", "--db", "sqlite:" + filepath.Join(t.TempDir(), "payment.db"),
		"--nats", srv.ClientURL(), "--log-level", "warn"})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- run(ctx, f) }()

	js := ordertest.JetStream(t, srv)
	require.NoError(t, outbox.EnsureStreams(t.Context(), js, nil))
	in, _ := json.Marshal(map[string]any{"input": order.Input{OrderID: "o-1", Customer: "c", Items: []order.Item{{SKU: "sku-fig", Qty: 1}}, AmountCents: 250}})
	cmd := nats.NewMsg("saga.cmd.payment.ChargePayment")
	cmd.Data = in
	for k, v := range map[string]string{
		"Nats-Msg-Id": "m-1", "Sagaflow-Saga-Id": "s-1", "Sagaflow-Definition": order.Definition,
		"Sagaflow-Definition-Version": "1", "Sagaflow-Step": "charge-payment", "Sagaflow-Attempt": "1",
		"Sagaflow-Action": "forward", "Sagaflow-Reply-To": "saga.reply." + order.Definition,
	} {
		cmd.Header.Set(k, v)
	}
	_, err = js.PublishMsg(t.Context(), cmd)
	require.NoError(t, err)

	// SAGA_REPLIES is a work queue: it takes only explicit-ack consumers (here, in place of the orchestrator).
	c, err := js.CreateConsumer(t.Context(), outbox.StreamReplies, jetstream.ConsumerConfig{AckPolicy: jetstream.AckExplicitPolicy})
	require.NoError(t, err)
	m, err := c.Next(jetstream.FetchMaxWait(60 * time.Second))
	require.NoError(t, err)
	require.Equal(t, "saga.reply."+order.Definition, m.Subject())
	require.Equal(t, "success", m.Headers().Get("Sagaflow-Outcome"))
	require.Equal(t, "s-1", m.Headers().Get("Sagaflow-Saga-Id"))
	require.Equal(t, "1", m.Headers().Get("Sagaflow-Attempt"))
	require.Contains(t, string(m.Data()), `"amount_cents":250`)

	cancel()
	require.NoError(t, <-done)
}
