// Package natstest runs a real NATS server with JetStream inside the test process.
//
// Each call to New starts github.com/nats-io/nats-server/v2 on 127.0.0.1 with a random port and its
// store in t.TempDir(), waits until it accepts connections, and shuts it down in t.Cleanup. Stop and
// Start restart it on the same port and store, so tests can take the broker away mid-stream and
// check that nothing is lost; Stop, WipeStore and Start bring it back empty, as after a lost disk.
package natstest

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Opts tunes a test server; the zero value is a single JetStream node.
type Opts struct {
	// SyncAlways makes JetStream fsync every write before acknowledging it (slower; the setting
	// production durability needs). Default off: tests restart the server gracefully.
	SyncAlways bool
	// MaxPayload overrides the server's maximum message size (default 1 MiB).
	MaxPayload int32
	// NoJetStream runs plain NATS without JetStream: JetStream API requests and publishes to
	// streams find no responders, as while JetStream is unavailable.
	NoJetStream bool
}

// Server is a running (or stopped) in-process NATS server.
type Server struct {
	t    testing.TB
	opts Opts
	dir  string
	port int

	mu  sync.Mutex
	srv *server.Server
}

// New starts a server, shut down in t.Cleanup. opts may be nil.
func New(t testing.TB, opts *Opts) *Server {
	t.Helper()
	s := &Server{t: t, dir: t.TempDir(), port: server.RANDOM_PORT}
	if opts != nil {
		s.opts = *opts
	}
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// Start starts the server again after Stop, on the same port and store. It is a no-op when the
// server runs.
func (s *Server) Start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return
	}
	o := &server.Options{
		ServerName: "natstest",
		Host:       "127.0.0.1",
		Port:       s.port,
		JetStream:  !s.opts.NoJetStream,
		StoreDir:   s.dir,
		SyncAlways: s.opts.SyncAlways,
		NoSigs:     true,
		NoLog:      true,
		MaxPayload: s.opts.MaxPayload,
	}
	var srv *server.Server
	var err error
	// After a restart the port may briefly still be held by the old listener.
	for i := 0; i < 50; i++ {
		srv, err = server.NewServer(o)
		if err != nil {
			s.t.Fatalf("natstest: new server: %v", err)
		}
		srv.Start()
		if srv.ReadyForConnections(10 * time.Second) {
			break
		}
		srv.Shutdown()
		srv.WaitForShutdown()
		srv = nil
		time.Sleep(100 * time.Millisecond)
	}
	if srv == nil {
		s.t.Fatalf("natstest: server on 127.0.0.1:%d not ready", s.port)
	}
	if !s.opts.NoJetStream && !srv.JetStreamEnabled() {
		s.t.Fatal("natstest: JetStream not enabled")
	}
	if s.port == server.RANDOM_PORT {
		_, p, _ := net.SplitHostPort(srv.Addr().String())
		s.port, _ = strconv.Atoi(p)
	}
	s.srv = srv
}

// Stop shuts the server down and waits until it has; its store is kept for Start.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv == nil {
		return
	}
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
	s.srv = nil
}

// WipeStore deletes the JetStream store of the stopped server, so the next Start comes up empty on
// the same port: a server that lost its disk, or a reset cluster. It fails the test when the
// server runs.
func (s *Server) WipeStore() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		s.t.Fatal("natstest: WipeStore on a running server; Stop it first")
	}
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		s.t.Fatalf("natstest: read store: %v", err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(s.dir, e.Name())); err != nil {
			s.t.Fatalf("natstest: wipe store: %v", err)
		}
	}
}

// URL returns the client URL, valid across restarts.
func (s *Server) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.port) }

// Connect returns a client connection that reconnects forever (so it survives Stop/Start),
// closed in t.Cleanup.
func (s *Server) Connect(t testing.TB) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond), nats.Name(t.Name()))
	if err != nil {
		t.Fatalf("natstest: connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// JetStream returns a JetStream context on a new connection (see Connect).
func (s *Server) JetStream(t testing.TB) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(s.Connect(t))
	if err != nil {
		t.Fatalf("natstest: jetstream: %v", err)
	}
	return js
}

// Consume reads stream's messages on subjects (all of them when none is given) from the start,
// through an explicit-ack consumer that acks each one — the kind JetStream allows on the
// work-queue streams (SAGA_COMMANDS, SAGA_REPLIES), where acking removes the message — until the
// test ends. Ordered consumers (no acks) are refused on those streams.
func Consume(t testing.TB, js jetstream.JetStream, stream string, subjects ...string) <-chan jetstream.Msg {
	t.Helper()
	cfg := jetstream.ConsumerConfig{AckPolicy: jetstream.AckExplicitPolicy, InactiveThreshold: time.Minute, FilterSubjects: subjects}
	c, err := js.CreateConsumer(t.Context(), stream, cfg)
	if err != nil {
		t.Fatalf("natstest: consumer on %s %v: %v", stream, subjects, err)
	}
	out := make(chan jetstream.Msg, 1024)
	cc, err := c.Consume(func(m jetstream.Msg) {
		_ = m.Ack()
		out <- m
	})
	if err != nil {
		t.Fatalf("natstest: consume %s: %v", stream, err)
	}
	t.Cleanup(cc.Stop)
	return out
}
