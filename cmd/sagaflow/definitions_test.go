package main

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestValidateGoodFiles(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("../../definitions/testdata/good/*")
	require.NoError(t, err)
	files = append(files, "../../examples/order/order-fulfilment.yaml")
	code, stdout, stderr := runCLI(t, append([]string{"definitions", "validate"}, files...)...)
	require.Equal(t, 0, code, stderr)
	require.Empty(t, stderr)
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	require.Len(t, lines, len(files), "one line per file")
	for i, f := range files {
		require.True(t, strings.HasPrefix(lines[i], f+": OK ("), lines[i])
	}
}

// TestValidateBadCorpus runs the validator on every file of the bad corpus: each must exit 1 and
// print exactly the problems its "# want: LINE:COL message" comments name, prefixed by the file.
func TestValidateBadCorpus(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("../../definitions/testdata/bad/*")
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(files), 20)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			t.Parallel()
			want := wantedErrors(t, f)
			require.NotEmpty(t, want, "%s has no '# want:' line", f)
			code, stdout, stderr := runCLI(t, "definitions", "validate", f)
			require.Equal(t, exitFailure, code)
			require.Empty(t, stdout)
			got := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
			require.Equal(t, "1 of 1 files invalid", got[len(got)-1])
			got = got[:len(got)-1]
			require.Len(t, got, len(want), stderr)
			for i, w := range want {
				require.True(t, strings.HasPrefix(got[i], w), "got %q, want prefix %q", got[i], w)
			}
		})
	}
}

// wantedErrors reads the "# want: LINE:COL message" comments of a bad corpus file and returns the
// expected output prefixes "FILE:LINE:COL: message" (":COL" is absent when COL is 0).
func wantedErrors(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var want []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "# want: ")
		if !ok {
			continue
		}
		pos, msg, _ := strings.Cut(rest, " ")
		line, col, _ := strings.Cut(pos, ":")
		loc := path + ":" + line
		if col != "0" {
			loc += ":" + col
		}
		want = append(want, loc+": "+msg)
	}
	require.NoError(t, sc.Err())
	return want
}

func TestValidateMissingFile(t *testing.T) {
	t.Parallel()
	code, _, stderr := runCLI(t, "definitions", "validate", "does-not-exist.yaml")
	require.Equal(t, exitFailure, code)
	require.Contains(t, stderr, "does-not-exist.yaml")
	require.Contains(t, stderr, "no such file")
}

func TestValidateNeedsAFile(t *testing.T) {
	t.Parallel()
	code, _, stderr := runCLI(t, "definitions", "validate")
	require.Equal(t, exitUsage, code)
	require.Contains(t, stderr, "Usage:")
}
