package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/internal/natstest"
	"github.com/sagaflow/sagaflow/internal/sqlitetest"
)

// TestServeDefinitionLifecycle is issue 11, item 7, as an operator meets it: serve restarted
// without the file of a version that sagas run on still manages them (with a warning), a changed
// file of that version stops the start, and SIGHUP adds a new version.
func TestServeDefinitionLifecycle(t *testing.T) {
	t.Parallel()
	dbURL := "sqlite:" + sqlitetest.Path(t)
	ns := natstest.New(t, nil)
	dir := t.TempDir()
	write := func(name, body string) {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600))
	}
	shop := func(version int, command string) string {
		return "name: shop\nversion: " + string(rune('0'+version)) + "\nsteps:\n  - name: pay\n    service: payment\n    command: " +
			command + "\n    compensation: Refund\n"
	}

	// serve runs "sagaflow serve" until the returned stop is called, and returns its API URL.
	serve := func(logs *syncBuffer) (api string, stop func() int) {
		t.Helper()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := ln.Addr().String()
		require.NoError(t, ln.Close())
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan int, 1)
		go func() {
			done <- run(ctx, []string{"serve", "--db", dbURL, "--nats", ns.URL(), "--definitions", dir, "--http", addr,
				"--log-format", "text", "--trace", "none"}, logs, logs)
		}()
		waitFor(t, logs, "sagaflow serving", done)
		return "http://" + addr, func() int {
			cancel()
			return <-done
		}
	}

	// First run: shop v3. A saga starts on it; no payment service answers, so it keeps running.
	write("shop-v3.yaml", shop(3, "Pay"))
	var logs1 syncBuffer
	api, stop := serve(&logs1)
	code, stdout, stderr := runCLI(t, "start", "shop", "--key", "o-1", "--api", api)
	require.Equal(t, 0, code, stderr)
	id := strings.TrimSpace(stdout)
	require.Equal(t, 0, stop(), logs1.String())

	// Restart with v3's file replaced by v4: v3 comes back from the database, with a warning.
	require.NoError(t, os.Remove(filepath.Join(dir, "shop-v3.yaml")))
	write("shop-v4.yaml", shop(4, "Pay"))
	var logs2 syncBuffer
	api, stop = serve(&logs2)
	require.Contains(t, logs2.String(), "level=WARN msg=\"definition versions loaded from the database")
	require.Contains(t, logs2.String(), "shop v3")
	code, stdout, stderr = runCLI(t, "definitions", "list", "--api", api)
	require.Equal(t, 0, code, stderr)
	require.Regexp(t, `(?m)^shop\s+3\s+1\s+0\s+0\s+0\s+0\s+\S+\s+[0-9a-f]{12}$`, stdout)
	require.Regexp(t, `(?m)^shop\s+4\s+0\s+0\s+0\s+0\s+0\s+`, stdout)
	code, stdout, stderr = runCLI(t, "cancel", id, "--reason", "v3 retired", "--api", api)
	require.Equal(t, 0, code, "the saga on the retired version is still managed: %s", stderr)
	require.Equal(t, id+": compensating\n", stdout)

	// SIGHUP: v5 is added and audited.
	write("shop-v5.yaml", shop(5, "Pay"))
	require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGHUP))
	waitFor(t, &logs2, "definitions reloaded", nil)
	require.Regexp(t, `msg="definitions reloaded" audit=definitions.reload actor=SIGHUP .*added="\[shop v5\]"`, logs2.String())
	code, stdout, stderr = runCLI(t, "definitions", "list", "--api", api)
	require.Equal(t, 0, code, stderr)
	require.Regexp(t, `(?m)^shop\s+5\s+`, stdout)
	require.Equal(t, 0, stop(), logs2.String())

	// v3's file comes back changed while its saga compensates: serve refuses to start.
	write("shop-v3.yaml", shop(3, "PayTwice"))
	code, _, stderr = runCLI(t, "serve", "--db", dbURL, "--nats", ns.URL(), "--definitions", dir, "--http", "",
		"--log-format", "text", "--trace", "none")
	require.Equal(t, exitFailure, code)
	require.Contains(t, stderr, "definition shop version 3 changed while 1 saga(s) run on it")
}

// waitFor waits until logs contain want, failing the test if done (the process) ends first or a
// minute passes.
func waitFor(t *testing.T, logs *syncBuffer, want string, done chan int) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(time.Minute)
	for !strings.Contains(logs.String(), want) {
		select {
		case <-tick.C:
		case code := <-done:
			t.Fatalf("serve exited with %d before %q:\n%s", code, want, logs.String())
		case <-deadline:
			t.Fatalf("no %q in the logs:\n%s", want, logs.String())
		}
	}
}
