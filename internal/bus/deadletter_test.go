package bus_test

import (
	"bytes"
	"log/slog"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/sagaflow/sagaflow/internal/bus"
)

// TestDeadLetterCounterLogsCallerAttrs shows that the dead-letter log carries the attributes the
// caller reads from the headers (the bus itself knows no saga header) beside its own.
func TestDeadLetterCounterLogsCallerAttrs(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	attrs := func(md message.Metadata) []any { return []any{"saga_id", md.Get("X-Saga")} }
	msg := message.NewMessage("m1", nil)
	msg.Metadata.Set("X-Saga", "s-42")
	msg.Metadata.Set(bus.HeaderDLQReason, "card declined")
	msg.Metadata.Set(bus.HeaderDLQSubject, "saga.cmd.payment.Charge")

	bus.DeadLetterCounter(noop.NewMeterProvider(), log, "payment", attrs)(msg)
	line := buf.String()
	for _, want := range []string{`msg="message dead-lettered"`, "consumer=payment", "saga_id=s-42",
		"subject=saga.cmd.payment.Charge", `reason="card declined"`} {
		require.Contains(t, line, want)
	}

	buf.Reset()
	bus.DeadLetterCounter(noop.NewMeterProvider(), log, "payment", nil)(msg)
	require.NotContains(t, buf.String(), "saga_id")
}
