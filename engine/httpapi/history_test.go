package httpapi_test

import (
	"net/http"
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/engine"
	"github.com/sagaflow/sagaflow/engine/httpapi"
	"github.com/sagaflow/sagaflow/internal/dbtest"
)

// TestAPIHistoryPages: GET /v1/sagas/{id}/history pages with after=<seq>&limit=N; the client's
// History follows the pages to the end.
func TestAPIHistoryPages(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
		c := setup(t, db)
		ctx := t.Context()
		id, err := c.Start(ctx, httpapi.StartRequest{Definition: "transfer", BusinessKey: "t-1"})
		require.NoError(t, err)
		_, err = c.Cancel(ctx, id, "customer asked")
		require.NoError(t, err)
		all, err := c.History(ctx, id)
		require.NoError(t, err)
		require.GreaterOrEqual(t, len(all), 4)

		var seen []engine.HistoryEntry
		after := int64(0)
		for pages := 0; ; pages++ {
			require.Less(t, pages, len(all)+1, "pages end")
			page, err := c.HistoryPage(ctx, id, engine.HistoryParams{After: after, Limit: 2})
			require.NoError(t, err)
			require.LessOrEqual(t, len(page.History), 2)
			seen = append(seen, page.History...)
			if page.Next == "" {
				break
			}
			after = page.History[len(page.History)-1].Seq
		}
		require.Equal(t, all, seen)

		page, err := c.HistoryPage(ctx, id, engine.HistoryParams{After: all[len(all)-1].Seq})
		require.NoError(t, err)
		require.Empty(t, page.History, "nothing after the last entry")
		require.Empty(t, page.Next)

		_, err = c.HistoryPage(ctx, "01900000-0000-7000-8000-000000000000", engine.HistoryParams{})
		var ae *httpapi.APIError
		require.ErrorAs(t, err, &ae)
		require.Equal(t, http.StatusNotFound, ae.Status)

		_, err = c.HistoryPage(ctx, id, engine.HistoryParams{Limit: httpapi.MaxHistoryLimit + 1})
		require.ErrorAs(t, err, &ae)
		require.Equal(t, http.StatusBadRequest, ae.Status)
		require.ErrorContains(t, err, "limit")
	})
}
