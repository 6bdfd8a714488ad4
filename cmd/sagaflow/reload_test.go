package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/engine"
	"github.com/sagaflow/sagaflow/internal/sqlitetest"
)

// syncBuffer is a log sink the watcher goroutine and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func pingFile(version int, command string) string {
	return "name: ping\nversion: " + string(rune('0'+version)) + "\nsteps:\n  - name: ping\n    service: echo\n    command: " + command + "\n"
}

// TestDefinitionsReload drives serve's SIGHUP reload: new versions are added, a bad file keeps the
// loaded set and is logged with its position, a removed file drops nothing, and a changed file of
// a version sagas run on is refused.
func TestDefinitionsReload(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := sqlitetest.New(t)
	require.NoError(t, engine.Migrate(ctx, db))
	dir := t.TempDir()
	write := func(name, body string) {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600))
	}
	write("ping-v1.yaml", pingFile(1, "Ping"))
	var logs syncBuffer
	reg := definitions.NewRegistry()
	l := &definitionsLoader{dir: dir, db: db, reg: reg, log: slog.New(slog.NewTextHandler(&logs, nil))}
	_, err := l.load(ctx)
	require.NoError(t, err)
	e, err := engine.New(engine.Config{DB: db, Definitions: reg})
	require.NoError(t, err)
	_, err = e.Start(ctx, "ping", "k-1", nil, engine.StartOptions{})
	require.NoError(t, err)

	// The watcher reloads on a signal.
	hup := make(chan os.Signal, 1)
	wctx, stop := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		l.watch(wctx, hup)
	}()
	t.Cleanup(func() {
		stop()
		<-watched
	})
	reloaded := func(n int) {
		t.Helper()
		hup <- syscall.SIGHUP
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		deadline := time.After(time.Minute)
		for strings.Count(logs.String(), "definitions reload") < n {
			select {
			case <-tick.C:
			case <-deadline:
				t.Fatalf("no reload logged:\n%s", logs.String())
			}
		}
	}

	// A bad file: nothing changes, the problem is logged with its position.
	write("ping-v2.yaml", pingFile(2, "Ping"))
	write("broken.yaml", "name: broken\nversion: 1\nsteps:\n  - name: x\n    service: y\n")
	reloaded(1)
	require.Contains(t, logs.String(), "definitions reload refused")
	require.Regexp(t, `broken\.yaml:4:\d+`, logs.String())
	_, err = reg.Get("ping", 2)
	require.ErrorIs(t, err, definitions.ErrNotFound, "a bad file keeps the old set")

	// Fixed: v2 is added, and audited; v1, whose file is removed, stays.
	require.NoError(t, os.Remove(filepath.Join(dir, "broken.yaml")))
	require.NoError(t, os.Remove(filepath.Join(dir, "ping-v1.yaml")))
	reloaded(2)
	require.Regexp(t, `msg="definitions reloaded" audit=definitions.reload actor=SIGHUP .*added="\[ping v2\]"`, logs.String())
	latest, err := reg.Latest("ping")
	require.NoError(t, err)
	require.Equal(t, 2, latest.Version)
	_, err = reg.Get("ping", 1)
	require.NoError(t, err, "a version with a running saga is never dropped")

	// v1's file comes back changed while its saga runs: refused, naming it.
	write("ping-v1.yaml", pingFile(1, "PingHarder"))
	reloaded(3)
	require.Contains(t, logs.String(), "definition ping version 1 changed while 1 saga(s) run on it")
	v1, err := reg.Get("ping", 1)
	require.NoError(t, err)
	require.Equal(t, "Ping", v1.Steps[0].Command)
}
