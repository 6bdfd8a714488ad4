package main

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
)

// natsAuthFlags are how a server command authenticates to NATS and secures the connection: one of
// a creds file, an nkey seed file, a user and password, or a token; and TLS with a CA and
// optionally a client certificate. Each flag has its SAGAFLOW_* variable (bindEnv).
type natsAuthFlags struct {
	creds, nkey            string
	user, password, token  string
	tlsCA, tlsCert, tlsKey string
	inboxPrefix            string
}

func (a *natsAuthFlags) register(c *cobra.Command) {
	c.Flags().StringVar(&a.creds, "nats-creds", "", "NATS credentials file (user JWT and nkey seed)")
	c.Flags().StringVar(&a.nkey, "nats-nkey", "", "NATS nkey seed file (user nkey authentication)")
	c.Flags().StringVar(&a.user, "nats-user", "", "NATS user (with --nats-password)")
	c.Flags().StringVar(&a.password, "nats-password", "", "NATS password of --nats-user (never logged)")
	c.Flags().StringVar(&a.token, "nats-token", "", "NATS authentication token (never logged)")
	c.Flags().StringVar(&a.tlsCA, "nats-tls-ca", "", "PEM file of the CA that signed the NATS server's certificate (turns TLS on)")
	c.Flags().StringVar(&a.tlsCert, "nats-tls-cert", "", "PEM client certificate for NATS TLS (with --nats-tls-key)")
	c.Flags().StringVar(&a.tlsKey, "nats-tls-key", "", "PEM private key of --nats-tls-cert")
	c.Flags().StringVar(&a.inboxPrefix, "nats-inbox-prefix", "", "prefix of this process's reply subjects (default _INBOX), so that a user may subscribe only to its own, e.g. _INBOX_orchestrator")
}

// check reports every conflicting or incomplete combination at once, each naming its flags.
func (a *natsAuthFlags) check() error {
	var set []string
	for _, m := range []struct {
		name string
		on   bool
	}{
		{"--nats-creds", a.creds != ""}, {"--nats-nkey", a.nkey != ""},
		{"--nats-user", a.user != "" || a.password != ""}, {"--nats-token", a.token != ""},
	} {
		if m.on {
			set = append(set, m.name)
		}
	}
	var errs []error
	if len(set) > 1 {
		errs = append(errs, fmt.Errorf("%s: give only one way to authenticate to NATS", strings.Join(set, ", ")))
	}
	if a.password != "" && a.user == "" {
		errs = append(errs, errors.New("--nats-password needs --nats-user"))
	}
	if a.user != "" && a.password == "" {
		errs = append(errs, errors.New("--nats-user needs --nats-password"))
	}
	if (a.tlsCert == "") != (a.tlsKey == "") {
		errs = append(errs, errors.New("--nats-tls-cert and --nats-tls-key go together"))
	}
	if err := errors.Join(errs...); err != nil {
		return usageError{err}
	}
	return nil
}

// options returns the nats.go options for the flags (none when no flag is set). A seed file that
// cannot be read is reported here; creds and certificate files are read when connecting.
func (a *natsAuthFlags) options() ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case a.creds != "":
		opts = append(opts, nats.UserCredentials(a.creds))
	case a.nkey != "":
		o, err := nats.NkeyOptionFromSeed(a.nkey)
		if err != nil {
			return nil, fmt.Errorf("--nats-nkey %s: %w", a.nkey, err)
		}
		opts = append(opts, o)
	case a.user != "":
		opts = append(opts, nats.UserInfo(a.user, a.password))
	case a.token != "":
		opts = append(opts, nats.Token(a.token))
	}
	if a.tlsCA != "" {
		opts = append(opts, nats.RootCAs(a.tlsCA))
	}
	if a.tlsCert != "" {
		opts = append(opts, nats.ClientCert(a.tlsCert, a.tlsKey))
	}
	if a.inboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(a.inboxPrefix))
	}
	return opts, nil
}

// redactNATSURLs hides the password (or token) of every URL in a comma-separated list, for logs
// and errors.
func redactNATSURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil || u.User == nil {
			if strings.Contains(p, "@") {
				parts[i] = "<unparsable URL redacted>"
			}
			continue
		}
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		} else {
			u.User = url.User("xxxxx") // a lone user info part is a token
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}
