package server

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// serve runs NewHTTPServer(limits) on 127.0.0.1 until the test ends and returns its address.
func serve(t *testing.T, limits HTTPLimits) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := NewHTTPServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok"))
	}), limits)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return ln.Addr().String()
}

// TestHTTPLimits: a client that sends its headers a byte at a time is disconnected by the
// server's header timeout while it is still dripping, and a request whose headers are over the cap
// is answered 431.
func TestHTTPLimits(t *testing.T) {
	t.Parallel()
	t.Run("SlowDripIsCutOff", func(t *testing.T) {
		t.Parallel()
		addr := serve(t, HTTPLimits{ReadHeaderTimeout: 300 * time.Millisecond})
		conn, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		defer conn.Close()
		_, err = conn.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n"))
		require.NoError(t, err)
		// Drip a header for up to two minutes; the server must close the connection long before
		// the drip ends (a write fails, or a read returns), or the test fails.
		closed := make(chan struct{})
		go func() {
			defer close(closed)
			_, _ = bufio.NewReader(conn).ReadString('\n') // returns when the server closes
		}()
		deadline := time.After(2 * time.Minute)
		for {
			select {
			case <-closed:
				return
			case <-deadline:
				t.Fatal("the server kept a slow-drip connection open for two minutes")
			case <-time.After(100 * time.Millisecond):
				if _, err := conn.Write([]byte("X")); err != nil {
					return // the server closed the connection
				}
			}
		}
	})
	t.Run("OversizedHeadersAre431", func(t *testing.T) {
		t.Parallel()
		addr := serve(t, HTTPLimits{MaxHeaderBytes: 4 << 10})
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+addr+"/", nil)
		require.NoError(t, err)
		req.Header.Set("X-Big", strings.Repeat("a", 64<<10))
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode)

		req, err = http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+addr+"/", nil)
		require.NoError(t, err)
		resp, err = http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, "a normal request still works")
	})
}
