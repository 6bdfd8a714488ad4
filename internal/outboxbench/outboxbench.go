// Package outboxbench measures the outbox end to end, as "sagaflow bench outbox" reports it:
// committed-to-acknowledged throughput of the relay on PostgreSQL + JetStream, beside two
// references measured in the same run on the same machine:
//
//   - raw: nats.go's asynchronous JetStream publish with Nats-Msg-Id, no database (the ceiling);
//   - forwarder: Watermill's own outbox pattern, a watermill-sql publisher inside the transaction
//     and components/forwarder relaying to JetStream through watermill-nats.
//
// Throughput is measured on a committed backlog: Writers goroutines commit Messages messages (in
// transactions of PerTx), then the relay (or the forwarder) is started and timed until JetStream
// has acknowledged the last one, so the figure is the relay's and not the writers'. The relay runs
// with BatchSize 2000 and 3 workers, LISTEN/NOTIFY on. The raw ceiling is the better of two runs
// (before and after the relay's), after a warm-up. Latency is measured in a second pass with
// writers and relay running together: for every message, from the moment its transaction
// committed to the moment JetStream acknowledged it.
//
// Everything runs in a fresh PostgreSQL schema, dropped at the end, and a dedicated stream,
// deleted at the end.
package outboxbench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	wmsql "github.com/ThreeDotsLabs/watermill-sql/v3/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/natsembed"
	"github.com/sagaflow/sagaflow/internal/pgschema"
	"github.com/sagaflow/sagaflow/internal/sqldb"
	"github.com/sagaflow/sagaflow/outbox"
)

// Config says what to measure against.
type Config struct {
	// PostgresDSN is the database to use (a schema is created in it and dropped). Empty: the
	// test suite's way (pgschema.Find): $SAGAFLOW_TEST_POSTGRES, else 127.0.0.1:5432.
	PostgresDSN string
	// NATSURL is the NATS server; empty starts one in process (file store in a temp directory).
	NATSURL string
	// Messages per measurement; default 20000.
	Messages int
	// Writers is the number of concurrent writing goroutines; default 1.
	Writers int
	// PerTx is the number of messages each transaction writes; default 10.
	PerTx int
	// Progress receives a line per phase; nil discards.
	Progress io.Writer
}

// Result is the outcome, printed by "sagaflow bench outbox" as one JSON line.
type Result struct {
	Messages           int     `json:"messages"`
	Writers            int     `json:"writers"`
	RelayMsgsPerS      float64 `json:"relay_msgs_per_s"`
	RawPublishMsgsPerS float64 `json:"raw_publish_msgs_per_s"`
	ForwarderMsgsPerS  float64 `json:"forwarder_msgs_per_s"`
	P50Ms              float64 `json:"p50_ms"`
	P99Ms              float64 `json:"p99_ms"`
}

const (
	streamName = "SAGAFLOW_BENCH"
	subjectRaw = "sagaflow.bench.raw"
	subjectRel = "sagaflow.bench.relay"
	subjectLat = "sagaflow.bench.latency"
	subjectFwd = "sagaflow.bench.forwarder"
)

// payload is what every message carries (plus a traceparent header), the size of a small event.
var payload = []byte(`{"order_id":"4b3c1f7e-2d9a-4c55-9a51-0e6f0b9f3a17","customer":"c-1029","items":[{"sku":"A-1","qty":2},{"sku":"B-7","qty":1}],"total_cents":12999}`)

const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

// Run measures and returns the result; ctx cancels it.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if cfg.Messages <= 0 {
		cfg.Messages = 20000
	}
	if cfg.Writers <= 0 {
		cfg.Writers = 1
	}
	if cfg.PerTx <= 0 {
		cfg.PerTx = 10
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	dsn, err := pgschema.Find(ctx, cfg.PostgresDSN)
	if err != nil {
		return Result{}, err
	}
	cfg.PostgresDSN = dsn
	env, err := start(ctx, cfg)
	if err != nil {
		return Result{}, err
	}
	defer env.close()

	res := Result{Messages: cfg.Messages, Writers: cfg.Writers}
	// Warm the server and the connection up, then take the ceiling as the better of two runs
	// (before and after the relay), so a noisy neighbour cannot flatter the relay's ratio.
	if _, err = env.raw(Config{Messages: min(cfg.Messages, 2000)}); err != nil {
		return res, fmt.Errorf("raw publish: %w", err)
	}
	if res.RawPublishMsgsPerS, err = env.raw(cfg); err != nil {
		return res, fmt.Errorf("raw publish: %w", err)
	}
	fmt.Fprintf(cfg.Progress, "raw nats.go async publish: %.0f msgs/s\n", res.RawPublishMsgsPerS)
	if res.RelayMsgsPerS, err = env.relayThroughput(ctx, cfg); err != nil {
		return res, fmt.Errorf("relay: %w", err)
	}
	fmt.Fprintf(cfg.Progress, "outbox relay: %.0f msgs/s\n", res.RelayMsgsPerS)
	raw2, err := env.raw(cfg)
	if err != nil {
		return res, fmt.Errorf("raw publish: %w", err)
	}
	fmt.Fprintf(cfg.Progress, "raw nats.go async publish, second run: %.0f msgs/s\n", raw2)
	res.RawPublishMsgsPerS = max(res.RawPublishMsgsPerS, raw2)
	if res.P50Ms, res.P99Ms, err = env.relayLatency(ctx, cfg); err != nil {
		return res, fmt.Errorf("relay latency: %w", err)
	}
	fmt.Fprintf(cfg.Progress, "outbox relay latency, commit to ack: p50 %.2f ms, p99 %.2f ms\n", res.P50Ms, res.P99Ms)
	if res.ForwarderMsgsPerS, err = env.forwarder(ctx, cfg); err != nil {
		return res, fmt.Errorf("watermill forwarder: %w", err)
	}
	fmt.Fprintf(cfg.Progress, "watermill-sql + forwarder: %.0f msgs/s\n", res.ForwarderMsgsPerS)
	return res, nil
}

// env is the running infrastructure of one Run.
type env struct {
	db        *sqlx.DB
	dsn       string // with search_path set to the bench schema
	schema    string
	admin     *sqlx.DB
	nc        *nats.Conn
	js        jetstream.JetStream
	embedded  *natsembed.Server
	tmpDir    string
	closeOnce sync.Once
}

func start(ctx context.Context, cfg Config) (_ *env, err error) {
	e := &env{}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	if e.admin, err = sqldb.Open(ctx, cfg.PostgresDSN); err != nil {
		return nil, err
	}
	if sqldb.DialectOf(e.admin) != sqldb.Postgres {
		return nil, fmt.Errorf("benchmark needs PostgreSQL, got %s", sqldb.Redact(cfg.PostgresDSN))
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	e.schema = "sagaflow_bench_" + hex.EncodeToString(b)
	if _, err = e.admin.ExecContext(ctx, `CREATE SCHEMA `+e.schema); err != nil {
		return nil, fmt.Errorf("create schema: %w", err)
	}
	e.dsn = withSearchPath(cfg.PostgresDSN, e.schema)
	if e.db, err = sqldb.Open(ctx, e.dsn); err != nil {
		return nil, err
	}
	e.db.SetMaxOpenConns(cfg.Writers + 8)
	e.db.SetMaxIdleConns(cfg.Writers + 8)
	if err = outbox.Migrate(ctx, e.db); err != nil {
		return nil, err
	}
	natsURL := cfg.NATSURL
	if natsURL == "" {
		if e.tmpDir, err = os.MkdirTemp("", "sagaflow-bench-nats-"); err != nil {
			return nil, err
		}
		if e.embedded, err = natsembed.Start(natsembed.Config{Dir: e.tmpDir}); err != nil {
			return nil, err
		}
		natsURL = e.embedded.ClientURL()
	}
	if e.nc, err = nats.Connect(natsURL, nats.MaxReconnects(-1)); err != nil {
		return nil, fmt.Errorf("connect to NATS %s: %w", natsURL, err)
	}
	if e.js, err = jetstream.New(e.nc, jetstream.WithPublishAsyncMaxPending(4096)); err != nil {
		return nil, err
	}
	_, err = e.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: streamName, Subjects: []string{"sagaflow.bench.>"}, Storage: jetstream.FileStorage,
		Duplicates: bus.DefaultDuplicates,
	})
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", streamName, err)
	}
	return e, nil
}

func (e *env) close() {
	e.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if e.js != nil {
			_ = e.js.DeleteStream(ctx, streamName)
		}
		if e.nc != nil {
			e.nc.Close()
		}
		if e.embedded != nil {
			e.embedded.Shutdown()
		}
		if e.tmpDir != "" {
			_ = os.RemoveAll(e.tmpDir)
		}
		if e.db != nil {
			_ = e.db.Close()
		}
		if e.admin != nil {
			if e.schema != "" {
				_, _ = e.admin.ExecContext(ctx, `DROP SCHEMA `+e.schema+` CASCADE`)
			}
			_ = e.admin.Close()
		}
	})
}

func withSearchPath(dsn, schema string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" {
		return dsn + " search_path=" + schema
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// raw publishes Messages messages with nats.go's async publish and Nats-Msg-Id.
func (e *env) raw(cfg Config) (float64, error) {
	begin := time.Now()
	futures := make([]jetstream.PubAckFuture, 0, cfg.Messages)
	for range cfg.Messages {
		m := &nats.Msg{Subject: subjectRaw, Data: payload, Header: nats.Header{"traceparent": {traceparent}}}
		f, err := e.js.PublishMsgAsync(m, jetstream.WithMsgID(uuid.NewString()), jetstream.WithStallWait(30*time.Second))
		if err != nil {
			return 0, err
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return 0, err
		case <-time.After(30 * time.Second):
			return 0, errors.New("no ack within 30s")
		}
	}
	return float64(cfg.Messages) / time.Since(begin).Seconds(), nil
}

// writeOutbox commits n messages to subject through the outbox Writer with cfg.Writers
// goroutines, calling committed with each transaction's message ids after its commit.
func (e *env) writeOutbox(ctx context.Context, cfg Config, subject string, committed func([]string)) error {
	// The relay of the "relay" mode LISTENs: wake it at each commit, as before outbox migration 0002.
	w := outbox.NewWriter(e.db, &outbox.WriterConfig{Notify: true})
	return e.writers(ctx, cfg, func(n int) error {
		msgs := make([]*message.Message, n)
		for i := range msgs {
			msgs[i] = message.NewMessage("", payload)
			msgs[i].Metadata.Set("traceparent", traceparent)
		}
		err := sqldb.InTx(ctx, e.db, func(tx *sqlx.Tx) error { return w.Write(ctx, tx, subject, msgs...) })
		if err == nil && committed != nil {
			ids := make([]string, n)
			for i, m := range msgs {
				ids[i] = m.UUID
			}
			committed(ids)
		}
		return err
	})
}

// writers runs cfg.Writers goroutines that together call tx for cfg.Messages messages, PerTx at a
// time.
func (e *env) writers(ctx context.Context, cfg Config, tx func(n int) error) error {
	var next atomic.Int64
	g, ctx := errgroup.WithContext(ctx)
	for range cfg.Writers {
		g.Go(func() error {
			for ctx.Err() == nil {
				end := next.Add(int64(cfg.PerTx))
				start := end - int64(cfg.PerTx)
				if start >= int64(cfg.Messages) {
					return nil
				}
				if err := tx(int(min(end, int64(cfg.Messages)) - start)); err != nil {
					return err
				}
			}
			return ctx.Err()
		})
	}
	return g.Wait()
}

// ackRecorder wraps a publisher and records when each message was acknowledged.
type ackRecorder struct {
	message.Publisher
	mu    sync.Mutex
	acked map[string]time.Time
	n     atomic.Int64
	done  chan struct{} // closed when n reaches want
	want  int64
}

// newAckRecorder returns a recorder expecting want acknowledgements; runRelay sets its Publisher.
func newAckRecorder(want int) *ackRecorder {
	return &ackRecorder{acked: make(map[string]time.Time, want), done: make(chan struct{}), want: int64(want)}
}

func (r *ackRecorder) Publish(topic string, msgs ...*message.Message) error {
	err := r.Publisher.Publish(topic, msgs...)
	now := time.Now()
	failed := map[int]bool{}
	var pe *bus.PublishError
	if errors.As(err, &pe) {
		for _, f := range pe.Failures {
			failed[f.Index] = true
		}
	} else if err != nil {
		return err
	}
	r.mu.Lock()
	added := 0
	for i, m := range msgs {
		if _, seen := r.acked[m.UUID]; !failed[i] && !seen {
			r.acked[m.UUID] = now
			added++
		}
	}
	r.mu.Unlock()
	if r.n.Add(int64(added)) >= r.want && added > 0 {
		select {
		case <-r.done:
		default:
			close(r.done)
		}
	}
	return err
}

func (r *ackRecorder) wait(ctx context.Context) error {
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(5 * time.Minute):
		return fmt.Errorf("only %d of %d messages acknowledged after 5 minutes", r.n.Load(), r.want)
	}
}

// runRelay starts a relay whose publisher rec records; stop ends it and waits.
func (e *env) runRelay(ctx context.Context, rec *ackRecorder) (stop func() error) {
	r := outbox.NewRelay(e.db, e.js, &outbox.RelayConfig{BatchSize: 2000, Workers: 3, ListenDSN: e.dsn, PollInterval: 200 * time.Millisecond,
		PublisherDecorator: func(pub message.Publisher) (message.Publisher, error) {
			rec.Publisher = pub
			return rec, nil
		}})
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	return func() error {
		cancel()
		return <-done
	}
}

// relayThroughput commits a backlog, then times the relay draining it.
func (e *env) relayThroughput(ctx context.Context, cfg Config) (float64, error) {
	if err := e.writeOutbox(ctx, cfg, subjectRel, nil); err != nil {
		return 0, err
	}
	rec := newAckRecorder(cfg.Messages)
	begin := time.Now()
	stop := e.runRelay(ctx, rec)
	err := rec.wait(ctx)
	elapsed := time.Since(begin)
	if serr := stop(); err == nil {
		err = serr
	}
	if err != nil {
		return 0, err
	}
	return float64(cfg.Messages) / elapsed.Seconds(), nil
}

// relayLatency runs writers and relay together and returns the p50 and p99 of commit → ack.
func (e *env) relayLatency(ctx context.Context, cfg Config) (p50, p99 float64, err error) {
	rec := newAckRecorder(cfg.Messages)
	stop := e.runRelay(ctx, rec)
	var mu sync.Mutex
	committedAt := make(map[string]time.Time, cfg.Messages)
	err = e.writeOutbox(ctx, cfg, subjectLat, func(ids []string) {
		now := time.Now()
		mu.Lock()
		for _, id := range ids {
			committedAt[id] = now
		}
		mu.Unlock()
	})
	if err == nil {
		err = rec.wait(ctx)
	}
	if serr := stop(); err == nil {
		err = serr
	}
	if err != nil {
		return 0, 0, err
	}
	lat := make([]float64, 0, len(committedAt))
	rec.mu.Lock()
	for id, c := range committedAt {
		// The ack can be recorded a hair before the writer reads the clock after its commit.
		lat = append(lat, max(0, float64(rec.acked[id].Sub(c))/float64(time.Millisecond)))
	}
	rec.mu.Unlock()
	slices.Sort(lat)
	return percentile(lat, 0.50), percentile(lat, 0.99), nil
}

func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted)-1) + 0.5)
	return sorted[i]
}

// forwarder measures Watermill's outbox pattern the same way as relayThroughput: a backlog
// committed through forwarder.Publisher over a watermill-sql publisher in each transaction, then
// components/forwarder (watermill-sql subscriber → watermill-nats JetStream publisher with
// TrackMsgId) timed until JetStream acknowledged the last message.
func (e *env) forwarder(ctx context.Context, cfg Config) (float64, error) {
	const topic = "sagaflow_bench_forwarder"
	logger := watermill.NopLogger{}
	schema := wmsql.DefaultPostgreSQLSchema{}
	sub, err := wmsql.NewSubscriber(e.db.DB, wmsql.SubscriberConfig{
		SchemaAdapter:    schema,
		OffsetsAdapter:   wmsql.DefaultPostgreSQLOffsetsAdapter{},
		InitializeSchema: true,
		PollInterval:     10 * time.Millisecond,
	}, logger)
	if err != nil {
		return 0, err
	}
	defer sub.Close()
	if err := sub.SubscribeInitialize(topic); err != nil {
		return 0, fmt.Errorf("create watermill-sql tables: %w", err)
	}
	err = e.writers(ctx, cfg, func(n int) error {
		return sqldb.InTx(ctx, e.db, func(tx *sqlx.Tx) error {
			sqlPub, err := wmsql.NewPublisher(tx.Tx, wmsql.PublisherConfig{SchemaAdapter: schema}, logger)
			if err != nil {
				return err
			}
			pub := forwarder.NewPublisher(sqlPub, forwarder.PublisherConfig{ForwarderTopic: topic})
			msgs := make([]*message.Message, n)
			for i := range msgs {
				msgs[i] = message.NewMessage(uuid.NewString(), payload)
				msgs[i].Metadata.Set("traceparent", traceparent)
			}
			return pub.Publish(subjectFwd, msgs...)
		})
	})
	if err != nil {
		return 0, fmt.Errorf("write: %w", err)
	}
	natsPub, err := wmnats.NewPublisherWithNatsConn(e.nc, wmnats.PublisherPublishConfig{
		Marshaler:         &wmnats.NATSMarshaler{},
		SubjectCalculator: wmnats.DefaultSubjectCalculator,
		JetStream:         wmnats.JetStreamConfig{TrackMsgId: true},
	}, logger)
	if err != nil {
		return 0, err
	}
	rec := newAckRecorder(cfg.Messages)
	rec.Publisher = natsPub
	fwd, err := forwarder.NewForwarder(sub, rec, logger, forwarder.Config{ForwarderTopic: topic, CloseTimeout: 5 * time.Second})
	if err != nil {
		return 0, err
	}
	begin := time.Now()
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- fwd.Run(runCtx) }()
	err = rec.wait(ctx)
	elapsed := time.Since(begin)
	cancel()
	if cerr := fwd.Close(); err == nil && cerr != nil && !strings.Contains(cerr.Error(), "closed") {
		err = cerr
	}
	<-done //nolint:errcheck // the forwarder stops with the error Close gave
	if err != nil {
		return 0, err
	}
	return float64(cfg.Messages) / elapsed.Seconds(), nil
}
