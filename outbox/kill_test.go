package outbox_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/pgtest"
	"github.com/sagaflow/sagaflow/internal/sqldb"
	"github.com/sagaflow/sagaflow/internal/sqlitetest"
	"github.com/sagaflow/sagaflow/outbox"
)

// helperEnv carries the helper relay process's configuration (JSON).
const helperEnv = "SAGAFLOW_TEST_RELAY_HELPER"

type helperConfig struct {
	DB    string // sqldb.Open URL
	NATS  string
	Pause bool // after the first batch is acknowledged and before it is marked: say so and hang
}

const batchPublished = "BATCH_PUBLISHED"

// runHelperRelay is the relay process TestRelayKilledMidBatch starts (and kills): the test binary
// run again with helperEnv set, dispatched from TestMain before any test runs.
func runHelperRelay(raw string) error {
	var cfg helperConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		return fmt.Errorf("decode %s: %w", helperEnv, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	db, err := sqldb.Open(ctx, cfg.DB)
	if err != nil {
		return err
	}
	defer db.Close()
	nc, err := nats.Connect(cfg.NATS, nats.MaxReconnects(-1))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	rcfg := outbox.RelayConfig{BatchSize: 100, PollInterval: 20 * time.Millisecond}
	if cfg.Pause {
		rcfg.PublisherDecorator = func(p message.Publisher) (message.Publisher, error) { return pausingPublisher{p}, nil }
	}
	return outbox.NewRelay(db, js, &rcfg).Run(ctx)
}

// pausingPublisher publishes, reports it on stdout, and hangs: the relay is then killed between
// JetStream's acknowledgement and the marking of its rows, the worst moment.
type pausingPublisher struct{ message.Publisher }

func (p pausingPublisher) Publish(topic string, msgs ...*message.Message) error {
	if err := p.Publisher.Publish(topic, msgs...); err != nil {
		return err
	}
	fmt.Println(batchPublished)
	select {}
}

// startHelper starts the relay process; it is killed in t.Cleanup if still running.
func startHelper(t *testing.T, cfg helperConfig) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	raw, err := json.Marshal(cfg)
	require.NoError(t, err)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+string(raw))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd, bufio.NewScanner(out)
}

// TestRelayKilledMidBatch is "Must show" 2: a relay running as a separate process is killed with
// SIGKILL after JetStream acknowledged a batch and before the rows were marked, then restarted:
// every committed message arrives, none twice.
func TestRelayKilledMidBatch(t *testing.T) {
	t.Parallel()
	for name, d := range map[string]sqldb.Dialect{"Postgres": sqldb.Postgres, "SQLite": sqldb.SQLite} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			url := "sqlite:" + sqlitetest.Path(t)
			if d == sqldb.Postgres {
				url = pgtest.SchemaDSN(t)
			}
			db, err := sqldb.Open(t.Context(), url)
			require.NoError(t, err)
			t.Cleanup(func() { _ = db.Close() })
			b := setup(t, db, nil)
			var committed idSet
			writeN := func(n int) {
				for range n / 100 {
					msgs := make([]*message.Message, 100)
					for i := range msgs {
						msgs[i] = message.NewMessage("", []byte("k"))
					}
					b.write(t, "events.kill.x", msgs...)
					for _, m := range msgs {
						committed.add(m.UUID)
					}
				}
			}
			writeN(1000)

			cmd, out := startHelper(t, helperConfig{DB: url, NATS: b.nats.URL(), Pause: true})
			for out.Scan() && out.Text() != batchPublished {
			}
			require.NoError(t, out.Err())
			require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
			require.Error(t, cmd.Wait(), "killed")

			st, err := b.js.Stream(t.Context(), bus.StreamEvents)
			require.NoError(t, err)
			require.GreaterOrEqual(t, st.CachedInfo().State.Msgs, uint64(100), "the batch reached JetStream")
			var backlog int
			require.NoError(t, db.Get(&backlog, `SELECT count(*) FROM sagaflow_outbox WHERE published_at IS NULL`))
			require.Equal(t, 1000, backlog, "and none of its rows was marked")

			writeN(500)
			cmd, _ = startHelper(t, helperConfig{DB: url, NATS: b.nats.URL()})
			got := readStream(t, b.js, bus.StreamEvents, "events.kill.>", len(committed.ids))
			requireExactlyOnce(t, committed.ids, got)
			waitFor(t, "the outbox drained", func() bool {
				return db.Get(&backlog, `SELECT count(*) FROM sagaflow_outbox`) == nil && backlog == 0
			})
			require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
			require.NoError(t, cmd.Wait(), "the restarted relay stops cleanly on SIGTERM")
		})
	}
}
