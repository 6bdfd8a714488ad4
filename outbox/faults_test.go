package outbox_test

import (
	"fmt"
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
	"github.com/sagaflow/sagaflow/internal/pgtest"
	"github.com/sagaflow/sagaflow/outbox"
)

// TestRelaySurvivesNATSOutage is "Must show" 3: the NATS server is stopped for 5 seconds while
// messages are being written and relayed, then restarted on the same store; nothing is lost and
// nothing arrives twice.
func TestRelaySurvivesNATSOutage(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
		b := setup(t, db, nil)
		r := startRelay(t, db, b.js, outbox.RelayConfig{BatchSize: 50, MaxBackoff: 500 * time.Millisecond})
		var committed idSet
		write := func(from, to int) {
			for i := from; i < to; i++ {
				m := message.NewMessage("", []byte(strconv.Itoa(i)))
				b.write(t, "events.outage.x", m)
				committed.add(m.UUID)
				r.Wake()
			}
		}
		write(0, 300)
		// Mid-stream: some messages are out, the rest are being written while NATS is gone.
		waitFor(t, "some messages published", func() bool {
			st, err := r.Stats(t.Context())
			return err == nil && st.Published > 0
		})
		b.nats.Stop()
		write(300, 600)
		time.Sleep(5 * time.Second) // the outage itself
		b.nats.Start()
		write(600, 900)
		got := readStream(t, b.js, bus.StreamEvents, "events.outage.>", len(committed.ids))
		requireExactlyOnce(t, committed.ids, got)
		waitDrained(t, r)
	})
}

// TestRelaysShareWorkAndKeepKeyOrder is "Must show" 4: three relays at once on PostgreSQL publish
// every message once (beyond what JetStream's dedup drops), and messages of one ordering key arrive
// in the order they were committed.
func TestRelaysShareWorkAndKeepKeyOrder(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	b := setup(t, db, nil)
	relays := make([]*outbox.Relay, 3)
	for i := range relays {
		relays[i] = startRelay(t, db, b.js, outbox.RelayConfig{BatchSize: 40})
	}
	const keys, perKey = 12, 150
	var committed idSet
	var wg sync.WaitGroup
	for k := range keys {
		wg.Go(func() {
			// One writer per key, committing in order; several messages per transaction now and
			// then, and some without a key in between.
			for i := 0; i < perKey; {
				n := min(1+i%3, perKey-i)
				msgs := make([]*message.Message, 0, n+1)
				for j := range n {
					msgs = append(msgs, outbox.WithOrderingKey(message.NewMessage("", []byte(fmt.Sprintf("k%d:%d", k, i+j))), "key-"+strconv.Itoa(k)))
				}
				msgs = append(msgs, message.NewMessage("", []byte("unkeyed")))
				b.write(t, "events.order.k"+strconv.Itoa(k), msgs...)
				for _, m := range msgs {
					committed.add(m.UUID)
				}
				relays[i%3].Wake()
				i += n
			}
		})
	}
	wg.Wait()
	got := readStream(t, b.js, bus.StreamEvents, "events.order.>", len(committed.ids))
	requireExactlyOnce(t, committed.ids, got)

	next := map[string]int{}
	for _, m := range got {
		if m.data == "unkeyed" {
			continue
		}
		key, n, ok := strings.Cut(m.data, ":")
		require.True(t, ok)
		seq, err := strconv.Atoi(n)
		require.NoError(t, err)
		require.Equal(t, next[key], seq, "key %s out of order", key)
		next[key]++
	}
	require.Len(t, next, keys)
	var published int64
	for _, r := range relays {
		st, err := r.Stats(t.Context())
		require.NoError(t, err)
		published += st.Published
	}
	require.Equal(t, int64(len(committed.ids)), published, "no row published by two relays")
}

// TestRelayRecreatesDeletedStream: the stream the relay's rows are for is deleted (by an operator,
// or lost with the JetStream store) while rows wait. The relay's publisher recreates it, the rows
// wait for it instead of being quarantined, and each goes out exactly once.
func TestRelayRecreatesDeletedStream(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
		b := setup(t, db, nil)
		var committed idSet
		for i := range 200 {
			m := message.NewMessage("", []byte(strconv.Itoa(i)))
			b.write(t, "events.gone.x", m)
			committed.add(m.UUID)
		}
		require.NoError(t, b.js.DeleteStream(t.Context(), bus.StreamEvents))
		r := startRelay(t, db, b.js, outbox.RelayConfig{BatchSize: 50, MaxBackoff: 500 * time.Millisecond})
		got := readStream(t, b.js, bus.StreamEvents, "events.gone.>", len(committed.ids))
		requireExactlyOnce(t, committed.ids, got)
		waitDrained(t, r)
		st, err := r.Stats(t.Context())
		require.NoError(t, err)
		require.Zero(t, st.Quarantined, "an outage of a Sagaflow stream quarantines nothing")
		require.Equal(t, int64(len(committed.ids)), st.Published)
	})
}
