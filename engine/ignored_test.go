package engine

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/internal/dbtest"
	"github.com/sagaflow/sagaflow/internal/protocol"
)

// TestIgnoredRepeatsCounted: a reply re-sent over and over (new message ids, same step, attempt
// and outcome) adds maxRepeatedIgnored ignored entries to the history, then only a count in the
// latest of them, whether the copies come one per transaction or many in one; the history has no
// gaps, and an entry of another kind starts the count afresh.
func TestIgnoredRepeatsCounted(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
		e := newEngine(t, db, Config{Definitions: registry(t, orderDefinition(t, "order", time.Second)), Now: newClock().Now, Rand: func() float64 { return 0.5 }})
		id, err := e.Start(t.Context(), "order", "k", nil, StartOptions{})
		require.NoError(t, err)
		require.NoError(t, applyReplies(t, e, reply(id, "order", "create-order", 1, false, protocol.OutcomeSuccess, `{}`))[0])
		spam := func(i int) protocol.Reply {
			r := reply(id, "order", "create-order", 1, false, protocol.OutcomeSuccess, `{}`)
			r.MessageID = fmt.Sprintf("spam-%03d", i)
			return r
		}
		for i := range 25 {
			require.NoError(t, applyReplies(t, e, spam(i))[0])
		}
		batch := make([]protocol.Reply, 5)
		for i := range batch {
			batch[i] = spam(25 + i)
		}
		for _, err := range applyReplies(t, e, batch...) {
			require.NoError(t, err)
		}
		ignored := func() []HistoryEntry {
			var out []HistoryEntry
			for _, h := range history(t, e, id) { // checks there is no gap
				if h.Kind == HistoryIgnored {
					out = append(out, h)
				}
			}
			return out
		}
		got := ignored()
		require.Len(t, got, maxRepeatedIgnored)
		var d struct {
			Repeated      int    `json:"repeated"`
			LastMessageID string `json:"last_message_id"`
			MessageID     string `json:"message_id"`
		}
		require.NoError(t, json.Unmarshal(got[len(got)-1].Detail, &d))
		require.Equal(t, 30-maxRepeatedIgnored, d.Repeated)
		require.Equal(t, "spam-029", d.LastMessageID)
		require.Equal(t, fmt.Sprintf("spam-%03d", maxRepeatedIgnored-1), d.MessageID)

		// Another entry in between: the next copy is recorded again.
		require.NoError(t, applyReplies(t, e, reply(id, "order", "reserve-inventory", 1, false, protocol.OutcomeSuccess, `{}`))[0])
		require.NoError(t, applyReplies(t, e, spam(30))[0])
		got = ignored()
		require.Len(t, got, maxRepeatedIgnored+1)
		require.Contains(t, string(got[len(got)-1].Detail), "spam-030")
		inst := get(t, e, id)
		require.Equal(t, "charge-payment", inst.Steps[inst.Step].Name)
	})
}
