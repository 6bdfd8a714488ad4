package outbox_test

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/dbtest"
	"github.com/sagaflow/sagaflow/internal/sqldb"
	"github.com/sagaflow/sagaflow/outbox"
)

func TestRelay(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
		// Three messages, two subjects, three runs of one subject: through the relay's own
		// publisher, and through a Watermill decorator (one Publish call per run).
		for _, decorated := range []bool{false, true} {
			t.Run(fmt.Sprintf("PublishesHeadersAndSubjects(decorated=%v)", decorated), func(t *testing.T) {
				b := setup(t, db, nil)
				pub := &countingPublisher{}
				cfg := outbox.RelayConfig{}
				if decorated {
					cfg.PublisherDecorator = pub.decorate
				}
				r := startRelay(t, db, b.js, cfg)
				m1 := message.NewMessage("", []byte(`{"n":1}`))
				m1.Metadata.Set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
				m2 := message.NewMessage("fixed-id-2", []byte(`{"n":2}`))
				m3 := message.NewMessage("fixed-id-3", []byte(`{"n":3}`))
				require.NoError(t, sqldb.InTx(t.Context(), db, func(tx *sqlx.Tx) error {
					return b.writer.WriteAll(t.Context(), tx, []outbox.Envelope{
						{Subject: "events.order.placed", Message: m1},
						{Subject: "events.order.shipped", Message: m2},
						{Subject: "events.order.placed", Message: m3},
					})
				}))
				r.Wake()
				require.NotEmpty(t, m1.UUID, "Write assigns a UUIDv7")

				got := readStream(t, b.js, bus.StreamEvents, "events.>", 3)
				require.Len(t, got, 3)
				require.Equal(t, m1.UUID, got[0].id)
				require.Equal(t, "events.order.placed", got[0].subject)
				require.Equal(t, `{"n":1}`, got[0].data)
				require.Equal(t, []string{"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}, got[0].headers["traceparent"], "header case kept")
				require.Equal(t, "fixed-id-2", got[1].id)
				require.Equal(t, "events.order.shipped", got[1].subject)
				require.Equal(t, "fixed-id-3", got[2].id)
				require.Equal(t, "events.order.placed", got[2].subject)
				for _, m := range got {
					for k := range m.headers {
						require.False(t, strings.HasPrefix(k, "_sagaflow_"), "local metadata %s sent as a header", k)
					}
				}
				waitDrained(t, r)
				var left int
				require.NoError(t, db.Get(&left, `SELECT count(*) FROM sagaflow_outbox`))
				require.Zero(t, left, "Retention 0 deletes published rows")
				if decorated {
					require.Equal(t, int64(3), pub.calls.Load(), "one Publish per run of one subject")
				}
			})
		}

		t.Run("KeepsPublishedRowsForRetention", func(t *testing.T) {
			b := setup(t, db, nil)
			r := startRelay(t, db, b.js, outbox.RelayConfig{Retention: time.Hour})
			b.write(t, "events.a.b", message.NewMessage("", []byte("x")))
			r.Wake()
			waitDrained(t, r)
			var kept int
			require.NoError(t, db.Get(&kept, `SELECT count(*) FROM sagaflow_outbox WHERE published_at IS NOT NULL`))
			require.Equal(t, 1, kept)
			st, err := r.Stats(t.Context())
			require.NoError(t, err)
			require.Equal(t, int64(1), st.Published)
			require.Zero(t, st.OldestUnpublishedAge)
		})
	})
}

// TestRelayConcurrentWriters is "Must show" 1: 10,000 messages written by 16 concurrent writers
// in random transactions, a third of them rolled back; exactly the committed ones arrive, once.
func TestRelayConcurrentWriters(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
		b := setup(t, db, nil)
		r := startRelay(t, db, b.js, outbox.RelayConfig{})
		const total, writers = 10_000, 16
		var committed idSet
		var wg sync.WaitGroup
		perWriter := total / writers
		for w := range writers {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(w), 42))
				for n := 0; n < perWriter; {
					size := min(1+rng.IntN(8), perWriter-n)
					msgs := make([]*message.Message, size)
					ids := make([]string, size)
					for i := range msgs {
						msgs[i] = message.NewMessage("", []byte(fmt.Sprintf("w%d-%d", w, n+i)))
					}
					rollback := rng.IntN(3) == 0
					err := sqldb.InTx(t.Context(), db, func(tx *sqlx.Tx) error {
						if err := b.writer.Write(t.Context(), tx, "events.load."+strconv.Itoa(w), msgs...); err != nil {
							return err
						}
						if rollback {
							return errRollback
						}
						return nil
					})
					if rollback {
						require.ErrorIs(t, err, errRollback)
					} else {
						require.NoError(t, err)
						for i, m := range msgs {
							ids[i] = m.UUID
						}
						committed.add(ids...)
					}
					n += size
				}
			})
		}
		wg.Wait()
		r.Wake()
		require.Greater(t, len(committed.ids), total/2)
		require.Less(t, len(committed.ids), total*5/6)
		got := readStream(t, b.js, bus.StreamEvents, "events.load.>", len(committed.ids))
		requireExactlyOnce(t, committed.ids, got)
	})
}

var errRollback = errorString("rolled back on purpose")

type errorString string

func (e errorString) Error() string { return string(e) }
