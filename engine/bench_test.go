package engine

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/internal/pgtest"
	"github.com/sagaflow/sagaflow/internal/protocol"
)

// BenchmarkReplyBatch measures the reply hot path on PostgreSQL: replies applied per second when
// they arrive in batches of 1, 16 and 64 (one transaction per batch). Each reply completes the
// first step of its own saga, so it locks the instance, stores it, appends three history entries,
// writes the next command to the outbox and records itself in the inbox.
//
//	go test -run '^$' -bench ReplyBatch -benchmem ./engine/
func BenchmarkReplyBatch(b *testing.B) {
	for _, size := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			db := pgtest.New(b)
			e := newEngine(b, db, Config{Definitions: registry(b, orderDefinition(b, "order", time.Minute))})
			b.ReportAllocs()
			applied := 0
			replies := make([]protocol.Reply, size)
			for b.Loop() {
				b.StopTimer()
				for i := range replies {
					id, err := e.Start(b.Context(), "order", "k", nil, StartOptions{})
					require.NoError(b, err)
					replies[i] = reply(id, "order", "create-order", 1, false, protocol.OutcomeSuccess, `{"order_id":1}`)
				}
				b.StartTimer()
				for _, v := range applyReplies(b, e, replies...) {
					if v != nil {
						b.Fatal(v)
					}
				}
				applied += size
			}
			b.ReportMetric(float64(applied)/b.Elapsed().Seconds(), "replies/s")
		})
	}
}

// BenchmarkSagas runs whole three-step sagas end to end on PostgreSQL and JetStream (engine, relay
// and three in-test participants in this process) with 64 sagas in flight, and reports sagas/s.
//
//	go test -run '^$' -bench Sagas ./engine/
func BenchmarkSagas(b *testing.B) {
	w := newWorld(b)
	db := pgtest.New(b)
	e := w.startEngine(db, registry(b, orderDefinition(b, "order", time.Minute)), nil)
	db.SetMaxOpenConns(16)
	for _, svc := range []string{"order", "inventory", "payment"} {
		w.participantWith(&participant{w: w, decide: succeed(`{}`), concurrent: true}, svc)
	}
	var failed atomic.Int64
	b.SetParallelism(32) // x GOMAXPROCS goroutines, each running one saga at a time
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id, err := e.Start(b.Context(), "order", "k", nil, StartOptions{})
			if err != nil {
				failed.Add(1)
				continue
			}
			if _, err := e.Wait(b.Context(), id); err != nil {
				failed.Add(1)
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sagas/s")
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d sagas failed to start or finish", n)
	}
}
