package engine

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/internal/dbtest"
	"github.com/sagaflow/sagaflow/saga"
)

// TestSummaries: a list of summaries carries no data, whatever the sagas' inputs weigh, and its
// filters (version, start-time range, needs-attention) and counts select what they say.
func TestSummaries(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
		v1 := orderDefinition(t, "order", time.Second)
		v2 := orderDefinition(t, "order", time.Second)
		v2.Version = 2
		e := newEngine(t, db, Config{Definitions: registry(t, v1, v2)})
		big := json.RawMessage(`{"blob":"` + strings.Repeat("x", 100_000) + `"}`)

		var ids []string
		var starts []time.Time
		for i, version := range []int{1, 2, 1} {
			// Distinct milliseconds, so that each start has its own place in a time range.
			time.Sleep(2 * time.Millisecond)
			starts = append(starts, time.Now())
			id, err := e.Start(t.Context(), "order", "key-"+string(rune('a'+i)), big, StartOptions{Version: version})
			require.NoError(t, err)
			ids = append(ids, id)
		}
		require.NoError(t, e.Cancel(t.Context(), ids[1], "alice", "test"))

		all, err := e.Summaries(t.Context(), Filter{})
		require.NoError(t, err)
		require.Len(t, all, 3)
		require.Equal(t, []string{ids[2], ids[1], ids[0]}, summaryIDs(all), "newest first")
		first := all[2]
		require.Equal(t, "order", first.Definition)
		require.Equal(t, 1, first.Version)
		require.Equal(t, "key-a", first.BusinessKey)
		require.Equal(t, saga.StatusRunning, first.Status)
		require.Equal(t, 0, first.Step)
		require.Equal(t, "create-order", first.StepName)
		require.Equal(t, 1, first.Attempt)
		require.False(t, first.Deadline.IsZero(), "a running saga waits for its reply")
		require.Len(t, first.TraceID, 32)
		inst, err := e.Get(t.Context(), ids[0])
		require.NoError(t, err)
		require.Equal(t, inst.CreatedAt, first.CreatedAt)
		require.Equal(t, inst.UpdatedAt, first.UpdatedAt)
		cancelled := all[1]
		require.Equal(t, saga.StatusCompensating, cancelled.Status)
		require.Empty(t, inst.LastError, "the untouched saga has no error")
		require.Contains(t, cancelled.LastError, "cancel")

		encoded, err := json.Marshal(all)
		require.NoError(t, err)
		require.Less(t, len(encoded), 5_000, "a summary carries no input: %d bytes for three", len(encoded))
		require.NotContains(t, string(encoded), "xxxx")

		byVersion, err := e.Summaries(t.Context(), Filter{Version: 2})
		require.NoError(t, err)
		require.Equal(t, []string{ids[1]}, summaryIDs(byVersion))

		after, err := e.Summaries(t.Context(), Filter{StartedAfter: starts[1]})
		require.NoError(t, err)
		require.Equal(t, []string{ids[2], ids[1]}, summaryIDs(after))
		before, err := e.Summaries(t.Context(), Filter{StartedBefore: starts[1]})
		require.NoError(t, err)
		require.Equal(t, []string{ids[0]}, summaryIDs(before))
		window, err := e.Summaries(t.Context(), Filter{StartedAfter: starts[1], StartedBefore: starts[2]})
		require.NoError(t, err)
		require.Equal(t, []string{ids[1]}, summaryIDs(window))

		page, err := e.Summaries(t.Context(), Filter{Limit: 2})
		require.NoError(t, err)
		require.Equal(t, []string{ids[2], ids[1]}, summaryIDs(page))
		rest, err := e.Summaries(t.Context(), Filter{Limit: 2, Before: page[1].ID})
		require.NoError(t, err)
		require.Equal(t, []string{ids[0]}, summaryIDs(rest))

		counts, err := e.CountByStatus(t.Context(), Filter{Status: "completed", Before: ids[0], Limit: 1})
		require.NoError(t, err)
		require.Equal(t, StatusCounts{saga.StatusRunning: 2, saga.StatusCompensating: 1}, counts, "status, cursor and limit do not narrow a count")
		counts, err = e.CountByStatus(t.Context(), Filter{Version: 1})
		require.NoError(t, err)
		require.Equal(t, StatusCounts{saga.StatusRunning: 2}, counts)
		none, err := e.CountByStatus(t.Context(), Filter{Definition: "nothing"})
		require.NoError(t, err)
		require.Empty(t, none)
	})
}

func summaryIDs(list []Summary) []string {
	out := make([]string, len(list))
	for i := range list {
		out[i] = list[i].ID
	}
	return out
}

func TestIDFloor(t *testing.T) {
	at := time.UnixMilli(0x0123_4567_89ab)
	require.Equal(t, "01234567-89ab-0000-0000-000000000000", idFloor(at))
	require.Equal(t, "00000000-0000-0000-0000-000000000000", idFloor(time.Unix(-5, 0)))
}
