package outboxbench_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/internal/outboxbench"
	"github.com/sagaflow/sagaflow/internal/pgtest"
)

func TestRun(t *testing.T) {
	t.Parallel()
	var progress bytes.Buffer
	res, err := outboxbench.Run(t.Context(), outboxbench.Config{
		PostgresDSN: pgtest.BaseDSN(t), Messages: 300, Writers: 4, Progress: &progress,
	})
	require.NoError(t, err)
	require.Equal(t, 300, res.Messages)
	require.Equal(t, 4, res.Writers)
	require.Positive(t, res.RelayMsgsPerS)
	require.Positive(t, res.RawPublishMsgsPerS)
	require.Positive(t, res.ForwarderMsgsPerS)
	require.GreaterOrEqual(t, res.P99Ms, res.P50Ms)
	require.Contains(t, progress.String(), "watermill-sql + forwarder")

	line, err := json.Marshal(res)
	require.NoError(t, err)
	var keys map[string]any
	require.NoError(t, json.Unmarshal(line, &keys))
	for _, k := range []string{"messages", "writers", "relay_msgs_per_s", "raw_publish_msgs_per_s", "forwarder_msgs_per_s", "p50_ms", "p99_ms"} {
		require.Contains(t, keys, k)
	}
}
