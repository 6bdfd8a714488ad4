package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestUntilUp: a server that answers on the third try is waited for (each failure logged); one
// that never answers fails with its last error once the startup timeout has passed.
func TestUntilUp(t *testing.T) {
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	calls := 0
	got, err := untilUp(t.Context(), logger, time.Minute, "database", func(context.Context) (string, error) {
		calls++
		if calls < 3 {
			return "", errors.New("the database system is starting up")
		}
		return "up", nil
	})
	require.NoError(t, err)
	require.Equal(t, "up", got)
	require.Equal(t, 3, calls)
	require.Equal(t, 2, strings.Count(logs.String(), "waiting for the database"), logs.String())
	require.Contains(t, logs.String(), "the database system is starting up")

	down := errors.New("connection refused")
	_, err = untilUp(t.Context(), logger, 300*time.Millisecond, "NATS", func(context.Context) (int, error) { return 0, down })
	require.ErrorIs(t, err, down)

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err = untilUp(ctx, logger, time.Minute, "NATS", func(context.Context) (int, error) { return 0, down })
	require.Error(t, err, "a cancelled context ends the wait")
}

// TestStartupTimeoutFlag: --startup-timeout must be positive.
func TestStartupTimeoutFlag(t *testing.T) {
	f := serverFlags{db: "sqlite:x.db", dbMaxConns: 1, logFormat: "json", logLevel: "info"}
	err := f.check()
	require.ErrorContains(t, err, "--startup-timeout 0s: must be positive")
	f.startupTimeout = time.Second
	require.NoError(t, f.check())
}
