package benchmeter

import (
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
