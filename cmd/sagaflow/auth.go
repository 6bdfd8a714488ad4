package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"

	"github.com/spf13/cobra"

	"github.com/sagaflow/sagaflow/engine/httpapi"
)

// apiSecurityFlags are serve's flags that protect the HTTP API: who may call it (--auth-file) and
// over what (--tls-*).
type apiSecurityFlags struct {
	authFile       string
	insecureNoAuth bool
	tlsCert        string
	tlsKey         string
	tlsClientCA    string
}

func (f *apiSecurityFlags) register(c *cobra.Command) {
	c.Flags().StringVar(&f.authFile, "auth-file", "", "file of the API's tokens (YAML or JSON: tokens: [{name, role, sha256}]; see sagaflow auth new-token); empty: no authentication, allowed only on a loopback --http")
	c.Flags().BoolVar(&f.insecureNoAuth, "insecure-no-auth", false, "serve the API without authentication on a non-loopback address (anyone who reaches it can start and cancel sagas)")
	c.Flags().StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate (chain) of the API; with --tls-key the API is served over HTTPS")
	c.Flags().StringVar(&f.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	c.Flags().StringVar(&f.tlsClientCA, "tls-client-ca", "", "PEM CA bundle: require API clients to present a certificate it signed (mutual TLS)")
}

// check reports wrong combinations, and refuses an API that anyone on the network could call
// without a token: a non-loopback --http needs --auth-file or --insecure-no-auth.
func (f *apiSecurityFlags) check(httpAddr string) error {
	var errs []error
	if (f.tlsCert == "") != (f.tlsKey == "") {
		errs = append(errs, errors.New("--tls-cert and --tls-key: give both or neither"))
	}
	if f.tlsClientCA != "" && f.tlsCert == "" {
		errs = append(errs, errors.New("--tls-client-ca needs --tls-cert and --tls-key"))
	}
	if f.authFile != "" && f.insecureNoAuth {
		errs = append(errs, errors.New("--auth-file and --insecure-no-auth: give one"))
	}
	if httpAddr != "" && f.authFile == "" && !f.insecureNoAuth && !loopback(httpAddr) {
		errs = append(errs, fmt.Errorf("--http %s is not a loopback address and the API has no authentication: "+
			"give --auth-file (see docs/security.md), or --insecure-no-auth to serve it open anyway", httpAddr))
	}
	return errors.Join(errs...)
}

// loopback reports whether addr (host:port) listens only on the loopback interface. An empty host
// (":8080") listens on every interface.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// build loads the auth file and the TLS material; nil values mean none. It warns when the API is
// served open on a non-loopback address.
func (f *apiSecurityFlags) build(httpAddr string, logger *slog.Logger) (*httpapi.Auth, *tls.Config, error) {
	var auth *httpapi.Auth
	if f.authFile != "" {
		a, err := httpapi.LoadAuth(f.authFile)
		if err != nil {
			return nil, nil, fmt.Errorf("--auth-file: %w", err)
		}
		auth = a
	} else if httpAddr != "" && !loopback(httpAddr) {
		logger.Warn("the HTTP API has no authentication (--insecure-no-auth): anyone who reaches it can start, cancel and redrive sagas",
			"http", httpAddr)
	}
	if f.tlsCert == "" {
		return auth, nil, nil
	}
	cert, err := tls.LoadX509KeyPair(f.tlsCert, f.tlsKey)
	if err != nil {
		return nil, nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if f.tlsClientCA != "" {
		pool, err := loadPool(f.tlsClientCA)
		if err != nil {
			return nil, nil, fmt.Errorf("--tls-client-ca: %w", err)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return auth, cfg, nil
}

func loadPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: no PEM certificate in it", path)
	}
	return pool, nil
}

// clientFlags are how the operator commands reach a protected API: a token, and TLS trust and
// identity.
type clientFlags struct {
	token   string
	tlsCA   string
	tlsCert string
	tlsKey  string
	hc      *http.Client // built by build; nil: http.DefaultClient
}

func (f *clientFlags) register(c *cobra.Command) {
	c.Flags().StringVar(&f.token, "token", "", "API token, sent as Authorization: Bearer (prefer the variable: a flag shows in ps)")
	c.Flags().StringVar(&f.tlsCA, "tls-ca", "", "PEM CA bundle to verify an https --api with (default: the system's)")
	c.Flags().StringVar(&f.tlsCert, "tls-cert", "", "PEM client certificate, for an API that requires mutual TLS")
	c.Flags().StringVar(&f.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
}

// build makes the HTTP client of the TLS flags.
func (f *clientFlags) build() error {
	if (f.tlsCert == "") != (f.tlsKey == "") {
		return usageError{errors.New("--tls-cert and --tls-key: give both or neither")}
	}
	if f.tlsCA == "" && f.tlsCert == "" {
		return nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.tlsCA != "" {
		pool, err := loadPool(f.tlsCA)
		if err != nil {
			return fmt.Errorf("--tls-ca: %w", err)
		}
		cfg.RootCAs = pool
	}
	if f.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(f.tlsCert, f.tlsKey)
		if err != nil {
			return fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg
	f.hc = &http.Client{Transport: tr}
	return nil
}

func newAuthCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "auth",
		Short: "Make API tokens for serve's --auth-file",
	}
	var name, role string
	nt := &cobra.Command{
		Use:   "new-token",
		Short: "Print a new random API token and its --auth-file entry",
		Long: `New-token prints a new random token (32 bytes) and the entry to add under "tokens:" in the file
that "sagaflow serve --auth-file" reads. The file keeps only the token's SHA-256: give the token to
its holder now, it cannot be shown again.`,
		Example: `  sagaflow auth new-token --name ops-bot --role operator`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := httpapi.NewAuth([]httpapi.Credential{{Name: name, Role: httpapi.Role(role), SHA256: httpapi.HashToken("")}}); err != nil {
				return usageError{fmt.Errorf("--name/--role: %w", err)}
			}
			token := httpapi.NewToken()
			fmt.Fprintf(cmd.OutOrStdout(), "# the token (give it to %s; it is not stored anywhere):\n%s\n"+
				"# add under \"tokens:\" in the --auth-file:\n  - name: %q\n    role: %s\n    sha256: %s\n",
				name, token, name, role, httpapi.HashToken(token))
			return nil
		},
	}
	nt.Flags().StringVar(&name, "name", "", "the holder's name, recorded as the actor of what the token does (required)")
	nt.Flags().StringVar(&role, "role", "", "viewer (reads), operator (also starts, cancels, redrives, retries, resolves, DLQ replay and purge) or admin (required)")
	c.AddCommand(nt)
	return c
}
