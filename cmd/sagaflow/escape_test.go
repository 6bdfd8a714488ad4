package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSafe(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in, want string
	}{
		{"Clean", "order-42", "order-42"},
		{"UnicodeAndSpaces", "Zürich → Genève", "Zürich → Genève"},
		{"Newline", "a\nb", `"a\nb"`},
		{"Tab", "a\tb", `"a\tb"`},
		{"Escape", "\x1b[31mred", `"\x1b[31mred"`},
		{"C1", "a\u009bb", `"a\u009bb"`},
		{"BidiOverride", "abc\u202edef", `"abc\u202edef"`},
		{"InvalidUTF8", "a\xffb", `"a\xffb"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, safe(tt.in))
		})
	}
}

// TestListAndShowEscapeControlCharacters: a cancel reason with a newline and ESC sequences (stored
// in the saga's last error and history) is printed escaped: no table row is forged, no colour set.
func TestListAndShowEscapeControlCharacters(t *testing.T) {
	api, _ := apiServer(t)
	code, stdout, stderr := runCLI(t, "start", "transfer", "--key", "t-7", "--api", api)
	require.Equal(t, 0, code, stderr)
	id := strings.TrimSpace(stdout)
	reason := "\x1b[31mred\x1b[0m\nfake-id  transfer v1  forged  completed"
	code, _, stderr = runCLI(t, "cancel", id, "--reason", reason, "--api", api)
	require.Equal(t, 0, code, stderr)

	code, stdout, stderr = runCLI(t, "list", "--api", api)
	require.Equal(t, 0, code, stderr)
	require.NotContains(t, stdout, "\x1b")
	lines := strings.Split(strings.TrimRight(stdout, "\n"), "\n")
	require.Len(t, lines, 2, "a header and one row:\n%s", stdout)
	require.Contains(t, lines[1], id)

	code, stdout, stderr = runCLI(t, "show", id, "--api", api)
	require.Equal(t, 0, code, stderr)
	require.NotContains(t, stdout, "\x1b")
	require.NotRegexp(t, `(?m)^fake-id`, stdout, "no line starts with the forged text")
	require.Contains(t, stdout, `\x1b[31mred`)
}

func TestEscapeControls(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in, want string
	}{
		{"Clean", "f.yaml:3:1: name: unknown field", "f.yaml:3:1: name: unknown field"},
		{"EscapeAndNewline", "f.yaml:3:1: x\x1b[31m\nforged: unknown field", `f.yaml:3:1: x\x1b[31m\nforged: unknown field`},
		{"InvalidByte", "a\x0fb\xffc", `a\x0fb\xffc`},
		{"ReplacementCharacterKept", "a\uFFFDb\u202e", `a` + "\uFFFD" + `b\u202e`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, escapeControls(tt.in))
		})
	}
}

// TestValidateEscapesControlCharacters: a field name with an escape sequence and a newline in a
// definition file is printed escaped, on one line.
func TestValidateEscapesControlCharacters(t *testing.T) {
	t.Parallel()
	f := filepath.Join(t.TempDir(), "esc.yaml")
	require.NoError(t, os.WriteFile(f, []byte("name: a\nversion: 1\n\"x\\e[31mred\\nforged\": 1\nsteps:\n  - {name: s, service: b, command: C}\n"), 0o600))
	code, stdout, stderr := runCLI(t, "definitions", "validate", f)
	require.Equal(t, exitFailure, code)
	require.Empty(t, stdout)
	require.NotContains(t, stderr, "\x1b")
	require.Equal(t, []string{f + `:3:1: x\x1b[31mred\nforged: unknown field; expected one of defaults, description, name, pivot, steps, trigger, version`,
		"1 of 1 files invalid"}, strings.Split(strings.TrimSuffix(stderr, "\n"), "\n"))
}
