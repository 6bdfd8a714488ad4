package engine

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/internal/dbtest"
	"github.com/sagaflow/sagaflow/internal/protocol"
	"github.com/sagaflow/sagaflow/saga"
)

// TestHandlerErrorNews: a participant's news that attempt 1 failed in its handler ("retrying",
// with the error) is recorded in the history and in the step's last error without changing the
// saga; when the attempt then times out, the error says what the handler said; attempt 2 succeeds.
func TestHandlerErrorNews(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
		w := newWorld(t)
		e := w.startEngine(db, registry(t, orderDefinition(t, "order", 3*time.Second)), nil)
		w.participant("order", func(cmd protocol.Command) *answer {
			if cmd.Attempt == 1 {
				return &answer{outcome: protocol.OutcomeRetrying, reason: "orders database: connection refused"}
			}
			return &answer{outcome: protocol.OutcomeSuccess, output: `{"order_id":"o-1"}`}
		})
		w.participant("inventory", succeed(`{}`))
		w.participant("payment", succeed(`{}`))
		id, err := e.Start(t.Context(), "order", "o-1", json.RawMessage(`{}`), StartOptions{})
		require.NoError(t, err)
		inst := wait(t, e, id)
		require.Equal(t, saga.StatusCompleted, inst.Status)

		var news, timeout *HistoryEntry
		entries := history(t, e, id)
		for i, h := range entries {
			switch {
			case h.Kind == HistoryReply && h.Outcome == string(protocol.OutcomeRetrying):
				news = &entries[i]
			case h.Kind == HistoryTimeout && h.Step == "create-order":
				timeout = &entries[i]
			}
		}
		require.NotNil(t, news, "the news is in the history")
		require.Equal(t, 1, news.Attempt)
		require.Contains(t, string(news.Detail), "orders database: connection refused")
		require.NotNil(t, timeout, "attempt 1 still timed out: news is not an answer")
		require.Equal(t, "attempt 1 timed out (the handler's last error: orders database: connection refused)",
			inst.Steps[0].LastError, "the step remembers why its attempt timed out")
	})
}
