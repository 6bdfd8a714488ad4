package hotel_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	_ "modernc.org/sqlite"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/engine"
	"github.com/sagaflow/sagaflow/outbox"
	"github.com/sagaflow/sagaflow/participant"
	"github.com/sagaflow/sagaflow/saga"

	"example.com/travel/hotel"
)

// stack is a whole trip-booking system inside the test, built only from Sagaflow's public
// packages: an in-process NATS JetStream, the orchestrator (engine and the relay of its outbox) on
// SQLite, the hotel on PostgreSQL and a flight service on SQLite.
type stack struct {
	js      jetstream.JetStream
	engine  *engine.Engine
	hotelDB *sqlx.DB
}

func setup(t *testing.T) *stack {
	t.Helper()
	ctx := t.Context()
	js := jetStream(t)
	require.NoError(t, outbox.EnsureStreams(ctx, js, nil))

	orchDB := sqlite(t, "orchestrator.db")
	require.NoError(t, engine.Migrate(ctx, orchDB))
	def, err := definitions.ParseFile("../trip-booking.yaml")
	require.NoError(t, err)
	reg := definitions.NewRegistry()
	require.NoError(t, reg.Register(def))
	relay := outbox.NewRelay(orchDB, js, &outbox.RelayConfig{PollInterval: 50 * time.Millisecond})
	e, err := engine.New(engine.Config{DB: orchDB, JetStream: js, Definitions: reg, OnCommit: relay.Wake})
	require.NoError(t, err)
	run(t, relay.Run)
	run(t, e.Run)

	hotelDB := postgres(t)
	require.NoError(t, hotel.Migrate(ctx, hotelDB))
	require.NoError(t, hotel.AddRooms(ctx, hotelDB, "grand", 2))
	hp, err := participant.New(hotelDB, js, &participant.Config{Service: hotel.Service})
	require.NoError(t, err)
	hotel.Register(hp)
	start(t, hp)

	flightDB := sqlite(t, "flight.db")
	require.NoError(t, participant.Migrate(ctx, flightDB))
	fp, err := participant.New(flightDB, js, &participant.Config{Service: "flight"})
	require.NoError(t, err)
	fp.Handle("BookFlight", func(_ context.Context, _ *sqlx.Tx, cmd participant.Command) (participant.Result, error) {
		var trip hotel.Trip
		if err := cmd.Input(&trip); err != nil {
			return participant.Result{}, err
		}
		if trip.TripID == "no-seat" {
			return participant.Failure("flight full"), nil
		}
		return participant.Success(map[string]string{"seat": "12A"}), nil
	})
	start(t, fp)
	return &stack{js: js, engine: e, hotelDB: hotelDB}
}

func (s *stack) trip(t *testing.T, tripID string) *engine.Instance {
	t.Helper()
	in, err := json.Marshal(hotel.Trip{TripID: tripID, Hotel: "grand", Nights: 2})
	require.NoError(t, err)
	id, err := s.engine.Start(t.Context(), "trip-booking", tripID, in, engine.StartOptions{})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	inst, err := s.engine.Wait(ctx, id)
	require.NoError(t, err)
	return inst
}

func (s *stack) count(t *testing.T, q string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, s.hotelDB.GetContext(t.Context(), &n, s.hotelDB.Rebind(q), args...))
	return n
}

func TestTripBooking(t *testing.T) {
	t.Parallel()
	s := setup(t)

	inst := s.trip(t, "t-1")
	require.Equal(t, saga.StatusCompleted, inst.Status)
	require.Equal(t, 1, s.count(t, `SELECT free FROM hotel_rooms WHERE hotel = 'grand'`))
	require.Equal(t, 1, s.count(t, `SELECT COUNT(*) FROM hotel_holds WHERE trip_id = 't-1' AND status = 'held'`))

	// No seat on the flight: the room held for the trip is released, once.
	inst = s.trip(t, "no-seat")
	require.Equal(t, saga.StatusCompensated, inst.Status)
	require.Equal(t, 1, s.count(t, `SELECT free FROM hotel_rooms WHERE hotel = 'grand'`))
	require.Equal(t, 1, s.count(t, `SELECT COUNT(*) FROM hotel_holds WHERE trip_id = 'no-seat' AND status = 'released'`))
}

// TestDuplicateAndBadCommands sends commands as any NATS client would (the README's message
// contract): the same command three times holds one room; a command whose input can never be a
// trip is rejected to the dead-letter stream with its reason, and holds nothing.
func TestDuplicateAndBadCommands(t *testing.T) {
	t.Parallel()
	s := setup(t)
	send := func(msgID, sagaID string, input any) {
		data, err := json.Marshal(map[string]any{"input": input})
		require.NoError(t, err)
		m := nats.NewMsg("saga.cmd.hotel.HoldRoom")
		m.Data = data
		for k, v := range map[string]string{
			"Nats-Msg-Id": msgID, "Sagaflow-Saga-Id": sagaID, "Sagaflow-Definition": "trip-booking",
			"Sagaflow-Definition-Version": "1", "Sagaflow-Step": "hold-room", "Sagaflow-Attempt": "1",
			"Sagaflow-Action": "forward", "Sagaflow-Reply-To": "saga.reply.trip-booking",
		} {
			m.Header.Set(k, v)
		}
		_, err = s.js.PublishMsg(t.Context(), m)
		require.NoError(t, err)
	}
	for _, msgID := range []string{"m-1", "m-2", "m-3"} { // three messages: a retry is a new message
		send(msgID, "saga-dup", hotel.Trip{TripID: "dup", Hotel: "grand", Nights: 1})
	}
	send("m-bad", "saga-bad", map[string]any{"trip_id": "bad"})

	dlq, err := s.js.OrderedConsumer(t.Context(), outbox.StreamDLQ, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"saga.dlq.saga.cmd.hotel.>"}})
	require.NoError(t, err)
	m, err := dlq.Next(jetstream.FetchMaxWait(time.Minute))
	require.NoError(t, err)
	require.Equal(t, "saga-bad", m.Headers().Get("Sagaflow-Saga-Id"))
	require.Contains(t, m.Headers().Get("Sagaflow-Dlq-Reason"), "want trip_id, hotel and nights")

	// The three answers reach the orchestrator, which knows no saga "saga-dup" and dead-letters
	// them with the reason: read them there (SAGA_REPLIES is a work queue the orchestrator owns).
	answers, err := s.js.OrderedConsumer(t.Context(), outbox.StreamDLQ, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"saga.dlq.saga.reply.trip-booking"}})
	require.NoError(t, err)
	// Among them, in any order, the news of the rejected command (outcome "retrying": the
	// participant tells the orchestrator why that attempt will not be answered).
	dup, news := 0, 0
	for dup < 3 || news < 1 {
		m, err := answers.Next(jetstream.FetchMaxWait(time.Minute))
		require.NoError(t, err)
		require.Contains(t, m.Headers().Get("Sagaflow-Dlq-Reason"), "unknown saga")
		switch saga := m.Headers().Get("Sagaflow-Saga-Id"); saga {
		case "saga-dup":
			require.Equal(t, "success", m.Headers().Get("Sagaflow-Outcome"), "every copy is answered, from the barrier")
			dup++
		case "saga-bad":
			require.Equal(t, "retrying", m.Headers().Get("Sagaflow-Outcome"))
			require.Contains(t, string(m.Data()), "dead-lettered")
			news++
		default:
			t.Fatalf("a dead-lettered reply of saga %q", saga)
		}
	}
	require.Equal(t, 3, dup)
	require.Equal(t, 1, s.count(t, `SELECT COUNT(*) FROM hotel_holds WHERE trip_id = 'dup'`), "held once")
	require.Equal(t, 0, s.count(t, `SELECT COUNT(*) FROM hotel_holds WHERE trip_id = 'bad'`))
	require.Equal(t, 1, s.count(t, `SELECT free FROM hotel_rooms WHERE hotel = 'grand'`))
}

// run runs fn until the test ends and checks it returned nil.
func run(t *testing.T, fn func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
}

// start starts p and stops it when the test ends.
func start(t *testing.T, p *participant.Participant) {
	t.Helper()
	require.NoError(t, p.Start(t.Context()))
	t.Cleanup(func() { require.NoError(t, p.Stop(context.Background())) })
}

func jetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true,
		StoreDir: t.TempDir(), NoSigs: true, NoLog: true})
	require.NoError(t, err)
	srv.Start()
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	require.True(t, srv.ReadyForConnections(30*time.Second))
	nc, err := nats.Connect(srv.ClientURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return js
}

func sqlite(t *testing.T, name string) *sqlx.DB {
	t.Helper()
	db, err := sqlx.Open("sqlite", "file:"+filepath.Join(t.TempDir(), name)+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_txlock=immediate")
	require.NoError(t, err)
	db.SetMaxOpenConns(4)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// postgres opens a fresh schema on the server SAGAFLOW_TEST_POSTGRES names (scripts/test.sh sets
// it), else 127.0.0.1:5432; the schema is dropped when the test ends.
func postgres(t *testing.T) *sqlx.DB {
	t.Helper()
	dsn := os.Getenv("SAGAFLOW_TEST_POSTGRES")
	if dsn == "" {
		dsn = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	}
	admin, err := sqlx.Open("postgres", dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = admin.Close() })
	require.NoError(t, admin.PingContext(t.Context()), "no PostgreSQL at %s: set SAGAFLOW_TEST_POSTGRES", dsn)
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	schema := "travel_" + hex.EncodeToString(b)
	_, err = admin.ExecContext(t.Context(), `CREATE SCHEMA `+schema)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = admin.ExecContext(context.Background(), `DROP SCHEMA `+schema+` CASCADE`) })
	u, err := url.Parse(dsn)
	require.NoError(t, err)
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	db, err := sqlx.Open("postgres", u.String())
	require.NoError(t, err)
	db.SetMaxOpenConns(4)
	t.Cleanup(func() { _ = db.Close() })
	return db
}
