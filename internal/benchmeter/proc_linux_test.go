//go:build linux

package benchmeter

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

// ReadProc reads /proc, which only Linux has: this file builds there only, instead of a skip.

// TestReadProc reads the test process itself: an open file shows up among its descriptors.
func TestReadProc(t *testing.T) {
	t.Parallel()
	before, err := ReadProc(os.Getpid())
	require.NoError(t, err)
	require.Positive(t, before.RSS)
	require.Positive(t, before.OpenFiles)
	f, err := os.Open(os.Args[0])
	require.NoError(t, err)
	defer f.Close()
	after, err := ReadProc(os.Getpid())
	require.NoError(t, err)
	require.GreaterOrEqual(t, after.CPU, before.CPU)
	_, err = ReadProc(-1)
	require.Error(t, err)
}
