package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/engine"
	"github.com/sagaflow/sagaflow/engine/httpapi"
	"github.com/sagaflow/sagaflow/internal/natstest"
	"github.com/sagaflow/sagaflow/internal/sqlitetest"
)

func TestServeRefusesOpenAPI(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, addr := range []string{"0.0.0.0:8080", ":8080", "192.0.2.1:8080"} {
		t.Run(addr, func(t *testing.T) {
			t.Parallel()
			code, _, stderr := runCLI(t, "serve", "--db", "sqlite:"+filepath.Join(dir, "x.db"), "--definitions", dir, "--http", addr)
			require.Equal(t, exitUsage, code, stderr)
			require.Contains(t, stderr, "--http "+addr+" is not a loopback address and the API has no authentication")
			require.Contains(t, stderr, "--auth-file")
		})
	}
	code, _, stderr := runCLI(t, "serve", "--db", "sqlite:x.db", "--definitions", dir, "--tls-cert", "c.pem")
	require.Equal(t, exitUsage, code)
	require.Contains(t, stderr, "--tls-cert and --tls-key: give both or neither")
	code, _, stderr = runCLI(t, "serve", "--db", "sqlite:x.db", "--definitions", dir, "--trace-url", "http://jaeger:16686/trace/")
	require.Equal(t, exitUsage, code)
	require.Contains(t, stderr, `--trace-url "http://jaeger:16686/trace/": want a URL with {trace_id} in it`)
}

// TestServeConsole: serve serves the web console under /ui/ beside the API, without a bearer
// token (it has its own sign-in), and links a saga to its trace with --trace-url.
func TestServeConsole(t *testing.T) {
	t.Parallel()
	addr, _ := startServe(t, "127.0.0.1", "--trace-url", "http://jaeger.test:16686/trace/{trace_id}")
	resp, err := http.Post("http://"+addr+"/v1/sagas", "application/json", strings.NewReader(`{"definition":"shop","business_key":"cart-9"}`))
	require.NoError(t, err)
	var started httpapi.StartResponse
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&started))
	require.NoError(t, resp.Body.Close())
	resp, err = http.Get("http://" + addr + "/ui/sagas/" + started.ID)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	require.Contains(t, string(body), "cart-9")
	require.Contains(t, string(body), `href="http://jaeger.test:16686/trace/`)
	require.Contains(t, string(body), "No authentication:")
}

func TestAuthNewToken(t *testing.T) {
	t.Parallel()
	code, _, stderr := runCLI(t, "auth", "new-token", "--name", "x", "--role", "root")
	require.Equal(t, exitUsage, code)
	require.Contains(t, stderr, `role "root"`)
	token, entry := newToken(t, "ops-bot", "operator")
	require.Regexp(t, `^sft_[0-9a-f]{64}$`, token)
	require.Contains(t, entry, "sha256: "+httpapi.HashToken(token))
	other, _ := newToken(t, "ops-bot", "operator")
	require.NotEqual(t, token, other)
}

// newToken runs "sagaflow auth new-token" and returns the token and its auth-file entry.
func newToken(t *testing.T, name, role string) (token, entry string) {
	t.Helper()
	code, stdout, stderr := runCLI(t, "auth", "new-token", "--name", name, "--role", role)
	require.Equal(t, 0, code, stderr)
	lines := strings.Split(stdout, "\n")
	require.GreaterOrEqual(t, len(lines), 6, stdout)
	return lines[1], strings.Join(lines[3:], "\n")
}

// startServe runs "sagaflow serve" with extra flags on a fresh SQLite database and an in-process
// NATS, until the test ends; it returns the API's host:port and the logs.
func startServe(t *testing.T, host string, extra ...string) (string, *syncBuffer) {
	t.Helper()
	ns := natstest.New(t, nil)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "shop.yaml"), []byte(
		"name: shop\nversion: 1\nsteps:\n  - name: pay\n    service: payment\n    command: Pay\n    compensation: Refund\n"), 0o600))
	ln, err := net.Listen("tcp", host+":0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan int, 1)
	logs := &syncBuffer{}
	args := append([]string{"serve", "--db", "sqlite:" + sqlitetest.Path(t), "--nats", ns.URL(), "--definitions", dir,
		"--http", addr, "--log-format", "text", "--trace", "none"}, extra...)
	go func() { done <- run(ctx, args, logs, logs) }()
	t.Cleanup(func() {
		cancel()
		require.Equal(t, 0, <-done, logs.String())
	})
	waitFor(t, logs, "sagaflow serving", done)
	// The engine's Watermill router (triggers) running: a node stopped while its router starts
	// takes the router's close timeout (30s) to stop.
	waitFor(t, logs, "Running router handlers", done)
	return addr, logs
}

func TestServeInsecureNoAuthWarns(t *testing.T) {
	t.Parallel()
	addr, logs := startServe(t, "0.0.0.0", "--insecure-no-auth")
	require.Contains(t, logs.String(), `level=WARN msg="the HTTP API has no authentication (--insecure-no-auth)`)
	require.Contains(t, logs.String(), "api_auth=false")
	_, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	code, stdout, stderr := runCLI(t, "list", "--api", "http://127.0.0.1:"+port)
	require.Equal(t, 0, code, stderr)
	require.NotContains(t, stdout, "shop")
}

// TestServeAuthTLS: serve with an auth file and mutual TLS. The CLI with the CA, a client
// certificate and a token works, and the history names the token; without the token it gets a
// 401, without a client certificate or over plain HTTP it cannot talk at all.
func TestServeAuthTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pki := newPKI(t, dir)
	opToken, opEntry := newToken(t, "ops-bot", "operator")
	viewToken, viewEntry := newToken(t, "watcher", "viewer")
	authFile := filepath.Join(dir, "auth.yaml")
	require.NoError(t, os.WriteFile(authFile, []byte("tokens:\n"+opEntry+viewEntry), 0o600))

	addr, logs := startServe(t, "127.0.0.1", "--auth-file", authFile,
		"--tls-cert", pki.serverCert, "--tls-key", pki.serverKey, "--tls-client-ca", pki.ca)
	require.Contains(t, logs.String(), "api_auth=true api_tls=true")
	api := "https://" + addr
	tlsFlags := []string{"--api", api, "--tls-ca", pki.ca, "--tls-cert", pki.clientCert, "--tls-key", pki.clientKey}

	code, stdout, stderr := runCLI(t, append([]string{"start", "shop", "--key", "o-1", "--token", opToken}, tlsFlags...)...)
	require.Equal(t, 0, code, stderr)
	id := strings.TrimSpace(stdout)

	code, _, stderr = runCLI(t, append([]string{"cancel", id, "--reason", "r", "--token", viewToken}, tlsFlags...)...)
	require.Equal(t, exitFailure, code)
	require.Contains(t, stderr, "HTTP 403")
	code, _, stderr = runCLI(t, append([]string{"cancel", id, "--reason", "r"}, tlsFlags...)...)
	require.Equal(t, exitFailure, code)
	require.Contains(t, stderr, "HTTP 401")
	code, stdout, stderr = runCLI(t, append([]string{"cancel", id, "--reason", "customer asked", "--token", opToken}, tlsFlags...)...)
	require.Equal(t, 0, code, stderr)
	require.Equal(t, id+": compensating\n", stdout)
	require.Contains(t, logs.String(), `msg=audit component=http actor=ops-bot on_behalf_of=cli:`)
	require.Contains(t, logs.String(), `action=cancel reason="customer asked" client=127.0.0.1:`)

	// The history names the token, with the CLI's user as "on behalf of".
	cf := clientFlags{token: viewToken, tlsCA: pki.ca, tlsCert: pki.clientCert, tlsKey: pki.clientKey}
	require.NoError(t, cf.build())
	hist, err := httpapi.NewClient(api, "", cf.hc).WithToken(viewToken).History(t.Context(), id)
	require.NoError(t, err)
	var cancelActor string
	for _, h := range hist {
		if h.Kind == engine.HistoryCancel {
			cancelActor = h.Actor
		}
	}
	require.True(t, strings.HasPrefix(cancelActor, "ops-bot (on behalf of cli:"), cancelActor)

	// No client certificate: the handshake fails.
	code, _, stderr = runCLI(t, "list", "--api", api, "--tls-ca", pki.ca, "--token", opToken)
	require.Equal(t, exitFailure, code)
	require.Contains(t, stderr, "certificate")
	// Without the CA the server is not trusted.
	code, _, stderr = runCLI(t, "list", "--api", api, "--tls-cert", pki.clientCert, "--tls-key", pki.clientKey, "--token", opToken)
	require.Equal(t, exitFailure, code)
	require.Contains(t, stderr, "certificate")
	// Plain HTTP gets nothing but the server's refusal.
	code, _, stderr = runCLI(t, "list", "--api", "http://"+addr, "--token", opToken)
	require.Equal(t, exitFailure, code)
	require.Contains(t, stderr, "HTTP 400")
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+addr+"/v1/sagas", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
}

// pki holds the PEM files of a test CA, a server certificate for 127.0.0.1 and a client
// certificate, both signed by the CA.
type pki struct {
	ca, serverCert, serverKey, clientCert, clientKey string
}

func newPKI(t *testing.T, dir string) pki {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sagaflow test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	caCert, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
		return p
	}
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) (string, string) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		require.NoError(t, err)
		keyDER, err := x509.MarshalECPrivateKey(key)
		require.NoError(t, err)
		return write(name+".pem", "CERTIFICATE", der), write(name+"-key.pem", "EC PRIVATE KEY", keyDER)
	}
	p := pki{ca: write("ca.pem", "CERTIFICATE", caDER)}
	p.serverCert, p.serverKey = leaf("server", 2, x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = leaf("client", 3, x509.ExtKeyUsageClientAuth)
	return p
}
