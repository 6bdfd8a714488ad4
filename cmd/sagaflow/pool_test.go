package main

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDBMaxConnsValidated: --db-max-conns below 1 is a usage error on every command that opens
// the database.
func TestDBMaxConnsValidated(t *testing.T) {
	db := "sqlite:" + filepath.Join(t.TempDir(), "x.db")
	for _, args := range [][]string{
		{"serve", "--db", db, "--definitions", t.TempDir(), "--db-max-conns", "0"},
		{"relay", "--db", db, "--db-max-conns", "0"},
		{"migrate", "--db", db, "--db-max-conns", "-1"},
	} {
		code, _, stderr := runCLI(t, args...)
		require.Equal(t, exitUsage, code, "%v: %s", args, stderr)
		require.Contains(t, stderr, "--db-max-conns", args)
	}
}

// TestNamespaceValidated: a --namespace outside [a-z0-9-]{1,32} is a usage error of serve and relay,
// from the flag and from SAGAFLOW_NAMESPACE.
func TestNamespaceValidated(t *testing.T) {
	db := "sqlite:" + filepath.Join(t.TempDir(), "x.db")
	for _, args := range [][]string{
		{"serve", "--db", db, "--definitions", t.TempDir(), "--namespace", "Acme"},
		{"relay", "--db", db, "--namespace", "a.b"},
	} {
		code, _, stderr := runCLI(t, args...)
		require.Equal(t, exitUsage, code, "%v: %s", args, stderr)
		require.Contains(t, stderr, "--namespace", args)
	}
	t.Setenv("SAGAFLOW_NAMESPACE", "no_underscores")
	code, _, stderr := runCLI(t, "relay", "--db", db)
	require.Equal(t, exitUsage, code, stderr)
	require.Contains(t, stderr, "--namespace")
}
