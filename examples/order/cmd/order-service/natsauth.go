package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/nats-io/nats.go"
)

// natsAuth is how the service authenticates to NATS and secures the connection. Each flag also
// reads its SAGAFLOW_* variable (--nats-creds: SAGAFLOW_NATS_CREDS); the flag wins.
type natsAuth struct {
	creds, nkey, user, password, token, tlsCA, tlsCert, tlsKey, inboxPrefix string
}

func (a *natsAuth) register(fs *flag.FlagSet) {
	for _, f := range []struct {
		p          *string
		name, help string
	}{
		{&a.creds, "nats-creds", "NATS credentials file (user JWT and nkey seed)"},
		{&a.nkey, "nats-nkey", "NATS nkey seed file"},
		{&a.user, "nats-user", "NATS user (with --nats-password)"},
		{&a.password, "nats-password", "NATS password of --nats-user (never logged)"},
		{&a.token, "nats-token", "NATS authentication token (never logged)"},
		{&a.tlsCA, "nats-tls-ca", "PEM file of the CA of the NATS server's certificate (turns TLS on)"},
		{&a.tlsCert, "nats-tls-cert", "PEM client certificate for NATS TLS (with --nats-tls-key)"},
		{&a.tlsKey, "nats-tls-key", "PEM private key of --nats-tls-cert"},
		{&a.inboxPrefix, "nats-inbox-prefix", "prefix of the service's reply subjects (default _INBOX), e.g. _INBOX_payment"},
	} {
		env := "SAGAFLOW_" + strings.ToUpper(strings.ReplaceAll(f.name, "-", "_"))
		fs.StringVar(f.p, f.name, os.Getenv(env), f.help+" [$"+env+"]")
	}
}

// check returns every conflicting or incomplete combination, each naming its flags.
func (a *natsAuth) check() []error {
	var set []string
	for name, on := range map[string]bool{"--nats-creds": a.creds != "", "--nats-nkey": a.nkey != "",
		"--nats-user": a.user != "" || a.password != "", "--nats-token": a.token != ""} {
		if on {
			set = append(set, name)
		}
	}
	var errs []error
	slices.Sort(set)
	if len(set) > 1 {
		errs = append(errs, fmt.Errorf("%s: give only one way to authenticate to NATS", strings.Join(set, ", ")))
	}
	if (a.user == "") != (a.password == "") {
		errs = append(errs, errors.New("--nats-user and --nats-password go together"))
	}
	if (a.tlsCert == "") != (a.tlsKey == "") {
		errs = append(errs, errors.New("--nats-tls-cert and --nats-tls-key go together"))
	}
	return errs
}

// options returns the nats.go options of the flags; files are read when connecting.
func (a *natsAuth) options() ([]nats.Option, error) {
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

// redactURLs hides the password or token in a comma-separated list of NATS URLs.
func redactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if at := strings.LastIndex(p, "@"); at >= 0 {
			scheme := ""
			if s := strings.Index(p, "://"); s >= 0 && s < at {
				scheme = p[:s+3]
			}
			parts[i] = scheme + "xxxxx@" + p[at+1:]
		}
	}
	return strings.Join(parts, ",")
}
