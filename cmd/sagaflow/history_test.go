package main

import (
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestShowHistoryLimit: show prints the first --history-limit entries and says there are more;
// --all prints every one.
func TestShowHistoryLimit(t *testing.T) {
	api, _ := apiServer(t)
	code, stdout, stderr := runCLI(t, "start", "transfer", "--key", "t-1", "--api", api)
	require.Equal(t, 0, code, stderr)
	id := strings.TrimSpace(stdout)
	code, _, stderr = runCLI(t, "cancel", id, "--reason", "test", "--api", api)
	require.Equal(t, 0, code, stderr)
	entry := regexp.MustCompile(`(?m)^\d+\s+\d\d:\d\d:\d\d\.\d{3}\s`)

	code, stdout, stderr = runCLI(t, "show", id, "--api", api, "--history-limit", "2")
	require.Equal(t, 0, code, stderr)
	require.Len(t, entry.FindAllString(stdout, -1), 2, stdout)
	require.Contains(t, stdout, "--all shows every one")

	code, stdout, stderr = runCLI(t, "show", id, "--api", api, "--all")
	require.Equal(t, 0, code, stderr)
	require.Greater(t, len(entry.FindAllString(stdout, -1)), 2, stdout)
	require.NotContains(t, stdout, "--all shows every one")

	code, _, stderr = runCLI(t, "show", id, "--api", api, "--history-limit", "0")
	require.NotEqual(t, 0, code)
	require.Contains(t, stderr, "--history-limit")
}
