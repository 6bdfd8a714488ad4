package natstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Secure is a running nats-server configured by a sample configuration with TLS and users
// (deploy/nats/secure.conf), with test certificates and passwords in place of the production ones.
type Secure struct {
	srv *server.Server
	// CertDir holds ca.pem, server.pem, server-key.pem, client.pem and client-key.pem.
	CertDir string
}

// passwordVarRE finds the password variables of a configuration: $SAGAFLOW_<USER>_PASSWORD.
var passwordVarRE = regexp.MustCompile(`\$(SAGAFLOW_([A-Z0-9_]+)_PASSWORD)\b`)

// Password returns the password the test configuration gives user.
func Password(user string) string { return "pw-" + user }

// SecureOptions parses the configuration file at path with nats-server's parser after writing
// test certificates into a temporary directory (replacing /etc/nats/certs/) and defining each
// $SAGAFLOW_<USER>_PASSWORD as Password(user in lowercase). It returns the options as the file
// sets them and the certificates' directory.
func SecureOptions(t testing.TB, path string) (*server.Options, string) {
	t.Helper()
	conf, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	dir := t.TempDir()
	WriteCerts(t, dir)
	var vars strings.Builder
	for _, m := range passwordVarRE.FindAllStringSubmatch(string(conf), -1) {
		vars.WriteString(m[1] + ": \"" + Password(strings.ToLower(m[2])) + "\"\n")
	}
	text := vars.String() + strings.ReplaceAll(string(conf), "/etc/nats/certs/", dir+"/")
	rendered := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(rendered, []byte(text), 0o600); err != nil {
		t.Fatalf("natstest: %v", err)
	}
	opts, err := server.ProcessConfigFile(rendered)
	if err != nil {
		t.Fatalf("natstest: parse %s: %v", path, err)
	}
	return opts, dir
}

// NewSecure starts a server with the configuration at path (see SecureOptions), on 127.0.0.1 with a
// random port, without monitoring, its store in t.TempDir(); it is shut down in t.Cleanup.
func NewSecure(t testing.TB, path string) *Secure {
	t.Helper()
	opts, dir := SecureOptions(t, path)
	opts.Host, opts.Port = "127.0.0.1", server.RANDOM_PORT
	opts.HTTPHost, opts.HTTPPort, opts.HTTPSPort = "", 0, 0
	opts.StoreDir = t.TempDir()
	opts.NoLog, opts.NoSigs = true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("natstest: new server: %v", err)
	}
	srv.Start()
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	if !srv.ReadyForConnections(30 * time.Second) {
		t.Fatal("natstest: secure server not ready")
	}
	return &Secure{srv: srv, CertDir: dir}
}

// URL returns the client URL.
func (s *Secure) URL() string { return s.srv.ClientURL() }

// TLSOptions are the client options of a TLS connection with the test CA and client certificate.
func (s *Secure) TLSOptions() []nats.Option {
	return []nats.Option{
		nats.RootCAs(filepath.Join(s.CertDir, "ca.pem")),
		nats.ClientCert(filepath.Join(s.CertDir, "client.pem"), filepath.Join(s.CertDir, "client-key.pem")),
	}
}

// WriteCerts writes a CA, a server certificate for 127.0.0.1 and localhost, and a client
// certificate, both signed by the CA and valid for a day, into dir: ca.pem, server.pem,
// server-key.pem, client.pem and client-key.pem.
func WriteCerts(t testing.TB, dir string) {
	t.Helper()
	check := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("natstest: certificates: %v", err)
		}
	}
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		check(err)
		return k
	}
	write := func(name, typ string, der []byte) {
		check(os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
	}
	now := time.Now()
	caKey := newKey()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sagaflow test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	check(err)
	ca, err := x509.ParseCertificate(caDER)
	check(err)
	write("ca.pem", "CERTIFICATE", caDER)
	for i, leaf := range []struct {
		name  string
		usage x509.ExtKeyUsage
	}{{"server", x509.ExtKeyUsageServerAuth}, {"client", x509.ExtKeyUsageClientAuth}} {
		key := newKey()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: leaf.name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{leaf.usage},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		check(err)
		write(leaf.name+".pem", "CERTIFICATE", der)
		keyDER, err := x509.MarshalECPrivateKey(key)
		check(err)
		write(leaf.name+"-key.pem", "EC PRIVATE KEY", keyDER)
	}
}
