package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/stretchr/testify/require"
)

func TestNATSAuthFlagsCheck(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		flags natsAuthFlags
		want  []string // substrings of the usage error; none: valid
	}{
		{"None", natsAuthFlags{}, nil},
		{"UserPassword", natsAuthFlags{user: "u", password: "p", tlsCA: "ca.pem"}, nil},
		{"CertAndKey", natsAuthFlags{creds: "c.creds", tlsCert: "c.pem", tlsKey: "k.pem"}, nil},
		{"CredsAndUser", natsAuthFlags{creds: "c.creds", user: "u", password: "p"}, []string{"--nats-creds, --nats-user: give only one"}},
		{"NkeyAndToken", natsAuthFlags{nkey: "seed", token: "t"}, []string{"--nats-nkey, --nats-token"}},
		{"PasswordWithoutUser", natsAuthFlags{password: "p"}, []string{"--nats-password needs --nats-user"}},
		{"UserWithoutPassword", natsAuthFlags{user: "u"}, []string{"--nats-user needs --nats-password"}},
		{"CertWithoutKey", natsAuthFlags{tlsCert: "c.pem"}, []string{"--nats-tls-cert and --nats-tls-key go together"}},
		{"KeyWithoutCert", natsAuthFlags{tlsKey: "k.pem", token: "t", creds: "c"}, []string{"--nats-tls-cert and --nats-tls-key", "--nats-creds, --nats-token"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.flags.check()
			if tt.want == nil {
				require.NoError(t, err)
				return
			}
			var ue usageError
			require.ErrorAs(t, err, &ue)
			for _, w := range tt.want {
				require.Contains(t, err.Error(), w)
			}
			require.NotContains(t, err.Error(), "=p", "no secret in the error")
		})
	}
}

func TestNATSAuthFlagsOptions(t *testing.T) {
	t.Parallel()
	kp, err := nkeys.CreateUser()
	require.NoError(t, err)
	seed, err := kp.Seed()
	require.NoError(t, err)
	pub, err := kp.PublicKey()
	require.NoError(t, err)
	seedFile := filepath.Join(t.TempDir(), "user.nk")
	require.NoError(t, os.WriteFile(seedFile, seed, 0o600))

	tests := []struct {
		name  string
		flags natsAuthFlags
		want  func(t *testing.T, o *nats.Options)
	}{
		{"None", natsAuthFlags{}, func(t *testing.T, o *nats.Options) {
			require.Empty(t, o.User)
			require.Empty(t, o.Token)
			require.Nil(t, o.UserJWT)
			require.False(t, o.Secure)
		}},
		{"UserPassword", natsAuthFlags{user: "u", password: "p"}, func(t *testing.T, o *nats.Options) {
			require.Equal(t, "u", o.User)
			require.Equal(t, "p", o.Password)
		}},
		{"Token", natsAuthFlags{token: "tok"}, func(t *testing.T, o *nats.Options) { require.Equal(t, "tok", o.Token) }},
		{"MissingCreds", natsAuthFlags{creds: "none-x.creds"}, nil},
		{"MissingCA", natsAuthFlags{tlsCA: "none-ca.pem"}, nil},
		{"Nkey", natsAuthFlags{nkey: seedFile}, func(t *testing.T, o *nats.Options) {
			require.Equal(t, pub, o.Nkey)
			require.NotNil(t, o.SignatureCB)
		}},
		{"InboxPrefix", natsAuthFlags{inboxPrefix: "_INBOX_orchestrator"}, func(t *testing.T, o *nats.Options) {
			require.Equal(t, "_INBOX_orchestrator", o.InboxPrefix)
		}},
		{"MissingClientCert", natsAuthFlags{tlsCert: "none-c.pem", tlsKey: "k.pem"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts, err := tt.flags.options()
			require.NoError(t, err)
			o := nats.GetDefaultOptions()
			for _, opt := range opts {
				if tt.want == nil { // the file is read as the option applies: a missing one fails it
					require.ErrorContains(t, opt(&o), "none-")
					return
				}
				require.NoError(t, opt(&o))
			}
			tt.want(t, &o)
		})
	}

	t.Run("MissingSeedFile", func(t *testing.T) {
		t.Parallel()
		f := natsAuthFlags{nkey: filepath.Join(t.TempDir(), "none.nk")}
		_, err := f.options()
		require.ErrorContains(t, err, "--nats-nkey")
	})
}

func TestRedactNATSURLs(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://u:secret@a:4222,nats://tok3n@b:4222", "nats://u:xxxxx@a:4222,nats://xxxxx@b:4222"},
		{"u:secret@%zz", "<unparsable URL redacted>"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, redactNATSURLs(tt.in))
		})
	}
}

// TestNATSAuthUsageErrors: conflicting NATS options from flags or environment exit 2 naming the
// flags, on every command that connects to NATS.
func TestNATSAuthUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"serve", "--definitions", "."}, {"relay"}} {
		cmd := args[0]
		code, _, stderr := runCLI(t, append(args, "--db", "sqlite:x.db", "--nats-creds", "c.creds",
			"--nats-user", "u", "--nats-password", "hunter2", "--nats-tls-cert", "c.pem")...)
		require.Equal(t, exitUsage, code, cmd)
		require.Contains(t, stderr, "--nats-creds, --nats-user: give only one way", cmd)
		require.Contains(t, stderr, "--nats-tls-cert and --nats-tls-key go together", cmd)
		require.NotContains(t, stderr, "hunter2", cmd)
	}
	t.Setenv("SAGAFLOW_NATS_TOKEN", "s3cret")
	code, _, stderr := runCLI(t, "relay", "--db", "sqlite:x.db", "--nats-nkey", "seed.nk")
	require.Equal(t, exitUsage, code)
	require.Contains(t, stderr, "--nats-nkey, --nats-token")
	require.NotContains(t, stderr, "s3cret")
}
