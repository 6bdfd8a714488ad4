// Package natsembed runs a NATS server with JetStream inside the Sagaflow process: the embedded
// bus of "sagaflow dev", which needs nothing installed. Production runs an external NATS cluster.
package natsembed

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Config says where the embedded server listens and keeps its streams.
type Config struct {
	// Dir holds the JetStream store; streams survive a restart on the same Dir. Required.
	Dir string
	// Host is the address to listen on; default 127.0.0.1 (never every interface by default).
	Host string
	// Port to listen on; 0 picks a free port (see ClientURL).
	Port int
	// SyncAlways makes JetStream fsync every message before acknowledging it: durable against a
	// machine crash, about two orders of magnitude slower. Off by default, as in NATS itself.
	SyncAlways bool
	// Logger receives the server's warnings and errors; nil discards them.
	Logger *slog.Logger
}

// Server is a running embedded NATS server.
type Server struct{ srv *server.Server }

// Start starts the server and waits until it accepts connections.
func Start(cfg Config) (*Server, error) {
	if cfg.Dir == "" {
		return nil, errors.New("natsembed: Config.Dir (the JetStream store directory) is required")
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	port := cfg.Port
	if port == 0 {
		port = server.RANDOM_PORT
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: "sagaflow-dev",
		Host:       cfg.Host,
		Port:       port,
		JetStream:  true,
		StoreDir:   cfg.Dir,
		SyncAlways: cfg.SyncAlways,
		NoSigs:     true,
		NoLog:      cfg.Logger == nil,
	})
	if err != nil {
		return nil, fmt.Errorf("natsembed: configure server: %w", err)
	}
	if cfg.Logger != nil {
		srv.SetLoggerV2(slogAdapter{cfg.Logger}, false, false, false)
	}
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("natsembed: server on %s:%d not ready after 30s", cfg.Host, cfg.Port)
	}
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		return nil, fmt.Errorf("natsembed: JetStream did not start (store %s)", cfg.Dir)
	}
	return &Server{srv: srv}, nil
}

// ClientURL is the URL clients connect to.
func (s *Server) ClientURL() string { return s.srv.ClientURL() }

// Shutdown stops the server and waits until it has; the store is flushed and kept.
func (s *Server) Shutdown() {
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
}

// slogAdapter passes the server's log lines to slog. Notices and debug lines are dropped: the
// embedded server is an implementation detail of dev mode.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Noticef(string, ...any) {}
func (a slogAdapter) Debugf(string, ...any)  {}
func (a slogAdapter) Tracef(string, ...any)  {}
func (a slogAdapter) Warnf(format string, v ...any) {
	a.l.Warn(fmt.Sprintf(format, v...), "component", "nats")
}
func (a slogAdapter) Errorf(format string, v ...any) {
	a.l.Error(fmt.Sprintf(format, v...), "component", "nats")
}
func (a slogAdapter) Fatalf(format string, v ...any) {
	a.l.Error(fmt.Sprintf(format, v...), "component", "nats")
}
