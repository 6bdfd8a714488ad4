package outbox_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/natstest"
	"github.com/sagaflow/sagaflow/internal/pgtest"
	"github.com/sagaflow/sagaflow/internal/sqldb"
	"github.com/sagaflow/sagaflow/outbox"
)

var benchPayload = []byte(`{"order_id":"4b3c1f7e-2d9a-4c55-9a51-0e6f0b9f3a17","customer":"c-1029","items":[{"sku":"A-1","qty":2}],"total_cents":12999}`)

// BenchmarkRelay measures committed-to-acknowledged throughput on PostgreSQL + JetStream: each
// iteration is one transaction of 10 messages, committed by one of W concurrent writers while the
// relay (woken by LISTEN/NOTIFY) publishes; the clock stops when JetStream has acknowledged the
// last message. msgs/s is the figure to compare (see docs/benchmarks.md).
func BenchmarkRelay(b *testing.B) {
	for _, writers := range []int{1, 16} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			const perTx = 10
			dsn := pgtest.SchemaDSN(b)
			db, err := sqldb.Open(b.Context(), dsn)
			require.NoError(b, err)
			b.Cleanup(func() { _ = db.Close() })
			db.SetMaxOpenConns(writers + 8)
			db.SetMaxIdleConns(writers + 8)
			require.NoError(b, outbox.Migrate(b.Context(), db))
			js := natstest.New(b, nil).JetStream(b)
			require.NoError(b, bus.EnsureStreams(b.Context(), js, bus.StreamsConfig{}))
			relay := outbox.NewRelay(db, js, &outbox.RelayConfig{BatchSize: 2000, Workers: 3, ListenDSN: dsn})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- relay.Run(ctx) }()
			b.Cleanup(func() { cancel(); require.NoError(b, <-done) })
			w := outbox.NewWriter(db, &outbox.WriterConfig{Notify: true}) // the relay LISTENs

			b.ReportAllocs()
			work := make(chan struct{}, writers)
			var wg sync.WaitGroup
			for range writers {
				wg.Go(func() {
					for range work {
						msgs := make([]*message.Message, perTx)
						for i := range msgs {
							msgs[i] = message.NewMessage("", benchPayload)
						}
						err := sqldb.InTx(ctx, db, func(tx *sqlx.Tx) error { return w.Write(ctx, tx, "events.bench.x", msgs...) })
						if err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			n := 0
			start := time.Now()
			for b.Loop() {
				work <- struct{}{}
				n += perTx
			}
			close(work)
			wg.Wait()
			for {
				st, err := relay.Stats(ctx)
				require.NoError(b, err)
				if st.Published >= int64(n) {
					break
				}
				time.Sleep(time.Millisecond) // a benchmark's own clock: polling is part of the measured wait
			}
			// b.Elapsed stops with the loop; the relay's drain after it counts too.
			b.ReportMetric(float64(n)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}

// BenchmarkWrite measures one transaction writing one message through the outbox.
func BenchmarkWrite(b *testing.B) {
	for _, d := range []struct {
		name string
		open func(testing.TB) *sqlx.DB
	}{{"Postgres", pgtest.New}, {"SQLite", func(tb testing.TB) *sqlx.DB {
		db, err := sqldb.Open(tb.Context(), "sqlite:"+tb.TempDir()+"/bench.db")
		require.NoError(tb, err)
		tb.Cleanup(func() { _ = db.Close() })
		return db
	}}} {
		b.Run(d.name, func(b *testing.B) {
			db := d.open(b)
			require.NoError(b, outbox.Migrate(b.Context(), db))
			w := outbox.NewWriter(db, nil)
			ctx := b.Context()
			b.ReportAllocs()
			for b.Loop() {
				err := sqldb.InTx(ctx, db, func(tx *sqlx.Tx) error {
					return w.Write(ctx, tx, "events.bench.x", message.NewMessage("", benchPayload))
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
