package benchmeter

import (
	"os"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseRSS(t *testing.T) {
	t.Parallel()
	rss, err := parseRSS([]byte("Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t  1234 kB\nThreads:\t3\n"))
	require.NoError(t, err)
	require.Equal(t, int64(1234*1024), rss)
	_, err = parseRSS([]byte("Name:\tx\n"))
	require.ErrorContains(t, err, "no VmRSS")
	_, err = parseRSS([]byte("VmRSS:\t12 MB\n"))
	require.ErrorContains(t, err, "malformed VmRSS")
}

// TestReadProc reads the test process itself: an open file shows up among its descriptors.
func TestReadProc(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("/proc is Linux's")
	}
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
