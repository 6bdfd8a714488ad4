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
