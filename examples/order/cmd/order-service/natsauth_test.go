package main

import (
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

func TestParseNATSAuth(t *testing.T) {
	base := []string{"--service", "payment", "--db", "sqlite:x.db"}
	_, err := parse(append(base, "--nats-creds", "c.creds", "--nats-user", "u", "--nats-password", "hunter2", "--nats-tls-key", "k.pem"))
	require.Error(t, err)
	require.Contains(t, err.Error(), "--nats-creds, --nats-user: give only one way")
	require.Contains(t, err.Error(), "--nats-tls-cert and --nats-tls-key go together")
	require.NotContains(t, err.Error(), "hunter2")

	t.Setenv("SAGAFLOW_NATS_USER", "payment")
	t.Setenv("SAGAFLOW_NATS_PASSWORD", "pw")
	f, err := parse(append(base, "--nats-inbox-prefix", "_INBOX_payment"))
	require.NoError(t, err)
	opts, err := f.natsAuth.options()
	require.NoError(t, err)
	o := nats.GetDefaultOptions()
	for _, opt := range opts {
		require.NoError(t, opt(&o))
	}
	require.Equal(t, "payment", o.User)
	require.Equal(t, "pw", o.Password)
	require.Equal(t, "_INBOX_payment", o.InboxPrefix)

	_, err = parse(append(base, "--nats-token", "t"))
	require.ErrorContains(t, err, "--nats-token, --nats-user")

	require.Equal(t, "nats://xxxxx@a:4222,nats://b:4222", redactURLs("nats://u:p@a:4222,nats://b:4222"))
}
