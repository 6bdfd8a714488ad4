package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"
)

// runCLI runs the command line in process and returns its exit code, stdout and stderr.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestUsageErrorsExitTwo(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"UnknownCommand", []string{"bogus"}, `unknown command "bogus"`},
		{"UnknownFlag", []string{"--bogus"}, "unknown flag: --bogus"},
		{"UnknownSubcommandFlag", []string{"version", "--bogus"}, "unknown flag: --bogus"},
		{"ExtraArgument", []string{"version", "extra"}, `unknown command "extra"`},
		{"UnknownGroupCommand", []string{"definitions", "bogus"}, `unknown command "bogus"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, _, stderr := runCLI(t, tt.args...)
			require.Equal(t, exitUsage, code)
			require.Contains(t, stderr, tt.want)
			require.Contains(t, stderr, "Usage:", "usage is printed")
		})
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	code, stdout, _ := runCLI(t, "version")
	require.Equal(t, 0, code)
	require.Regexp(t, `^sagaflow \S+ \S+/\S+ go\S+\n$`, stdout)
}

func TestHelpOnEveryCommand(t *testing.T) {
	t.Parallel()
	root := newRootCmd()
	for _, c := range root.Commands() {
		if c.Hidden || c.Name() == "help" || c.Name() == "completion" {
			continue
		}
		t.Run(c.Name(), func(t *testing.T) {
			t.Parallel()
			code, stdout, _ := runCLI(t, c.Name(), "--help")
			require.Equal(t, 0, code)
			require.Contains(t, stdout, "Usage:")
			want := c.Long // help shows the long description when there is one
			if want == "" {
				want = c.Short
			}
			require.Contains(t, stdout, want)
		})
	}
}
