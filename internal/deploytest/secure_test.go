package deploytest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	order "github.com/sagaflow/sagaflow/examples/order"
	"github.com/sagaflow/sagaflow/examples/order/services"
	"github.com/sagaflow/sagaflow/internal/sqlitetest"
	"github.com/sagaflow/sagaflow/outbox"
	"github.com/sagaflow/sagaflow/participant"
)

// secureUsers are the users deploy/nats/secure.conf defines: one per component.
var secureUsers = append([]string{"orchestrator", "relay"}, order.Services...)

// writeCerts writes a CA, a server certificate for 127.0.0.1 and a client certificate, all signed
// by the CA, into dir as ca.pem, server.pem, server-key.pem, client.pem and client-key.pem.
func writeCerts(t *testing.T, dir string) {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		return k
	}
	write := func(name, typ string, der []byte) {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
	}
	now := time.Now()
	caKey := newKey()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sagaflow test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
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
		require.NoError(t, err)
		write(leaf.name+".pem", "CERTIFICATE", der)
		keyDER, err := x509.MarshalECPrivateKey(key)
		require.NoError(t, err)
		write(leaf.name+"-key.pem", "EC PRIVATE KEY", keyDER)
	}
}

// securePassword is the password the tests give user.
func securePassword(user string) string { return "pw-" + user }

// secureOptions parses deploy/nats/secure.conf with nats-server's parser, with the certificates
// of writeCerts in place of /etc/nats/certs and each password variable defined, and returns the
// server options and the directory of the certificates.
func secureOptions(t *testing.T) (*server.Options, string) {
	t.Helper()
	dir := t.TempDir()
	writeCerts(t, dir)
	var vars strings.Builder
	for _, u := range secureUsers {
		vars.WriteString("SAGAFLOW_" + strings.ToUpper(u) + "_PASSWORD: \"" + securePassword(u) + "\"\n")
	}
	conf := vars.String() + strings.ReplaceAll(string(read(t, "deploy/nats/secure.conf")), "/etc/nats/certs/", dir+"/")
	path := filepath.Join(dir, "secure.conf")
	require.NoError(t, os.WriteFile(path, []byte(conf), 0o600))
	opts, err := server.ProcessConfigFile(path)
	require.NoError(t, err)
	return opts, dir
}

func TestNATSSecureConfig(t *testing.T) {
	t.Parallel()
	require.NotContains(t, string(read(t, "deploy/nats/secure.conf")), "pw-", "no password in the sample")
	opts, _ := secureOptions(t)
	require.True(t, opts.JetStream)
	require.NotNil(t, opts.TLSConfig, "TLS on")
	require.Equal(t, tls.RequireAndVerifyClientCert, opts.TLSConfig.ClientAuth, "client certificates required")
	require.Empty(t, opts.NoAuthUser)
	users := map[string]*server.User{}
	for _, u := range opts.Users {
		users[u.Username] = u
	}
	require.Len(t, users, len(secureUsers))
	for _, name := range secureUsers {
		u := users[name]
		require.NotNil(t, u, name)
		require.Equal(t, securePassword(name), u.Password, "%s: password from its variable", name)
		require.Equal(t, []string{"_INBOX_" + name + ".>"}, u.Permissions.Subscribe.Allow, "%s subscribes only to its own inbox", name)
		pub := u.Permissions.Publish.Allow
		if !slices.Contains(order.Services, name) {
			continue
		}
		durable := participant.Durable(name)
		require.Contains(t, pub, "$JS.API.CONSUMER.MSG.NEXT.SAGA_COMMANDS."+durable, name)
		require.Contains(t, pub, "$JS.ACK.SAGA_COMMANDS."+durable+".>", name)
		require.Contains(t, pub, "saga.dlq.saga.cmd."+name+".>", name)
		for _, s := range pub {
			// A participant names its own consumer in every JetStream API subject, creates no
			// stream and publishes no command.
			if strings.HasPrefix(s, "$JS.") && s != "$JS.API.STREAM.INFO.SAGA_COMMANDS" {
				require.Contains(t, s, durable, "%s may publish %s", name, s)
			}
			require.NotContains(t, []string{">", "saga.>", "saga.cmd.>", "$JS.API.>", "saga.dlq.>"}, s, name)
		}
	}
}

// TestNATSSecureServer runs a nats-server with deploy/nats/secure.conf (bound to 127.0.0.1) and
// the payment service of the order example on its own user over TLS: it handles a command and its
// reply reaches the orchestrator; it cannot read the shipping service's commands; and a client
// without credentials is refused.
func TestNATSSecureServer(t *testing.T) {
	t.Parallel()
	opts, certs := secureOptions(t)
	opts.Host, opts.Port = "127.0.0.1", server.RANDOM_PORT
	opts.HTTPHost, opts.HTTPPort = "", 0
	opts.StoreDir = t.TempDir()
	opts.NoLog, opts.NoSigs = true, true
	srv, err := server.NewServer(opts)
	require.NoError(t, err)
	srv.Start()
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	require.True(t, srv.ReadyForConnections(30*time.Second), "nats-server did not start")

	tlsOpts := []nats.Option{nats.RootCAs(filepath.Join(certs, "ca.pem")),
		nats.ClientCert(filepath.Join(certs, "client.pem"), filepath.Join(certs, "client-key.pem"))}
	// connect connects as user over TLS; the async errors (permission violations) go to the channel.
	connect := func(user string) (jetstream.JetStream, *nats.Conn, <-chan error) {
		t.Helper()
		errs := make(chan error, 16)
		nc, err := nats.Connect(srv.ClientURL(), append(slices.Clone(tlsOpts), nats.UserInfo(user, securePassword(user)),
			nats.CustomInboxPrefix("_INBOX_"+user), // --nats-inbox-prefix
			nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
				select {
				case errs <- err:
				default:
				}
			}))...)
		require.NoError(t, err)
		t.Cleanup(nc.Close)
		require.True(t, nc.TLSRequired() || nc.ConnectedUrl() != "", "connected")
		_, err = nc.TLSConnectionState()
		require.NoError(t, err, "the connection is TLS")
		js, err := jetstream.New(nc)
		require.NoError(t, err)
		return js, nc, errs
	}
	waitViolation := func(errs <-chan error, subject string) {
		t.Helper()
		for {
			select {
			case err := <-errs:
				if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), subject) {
					return
				}
			case <-t.Context().Done():
				t.Fatalf("no permission violation for %s", subject)
			}
		}
	}

	t.Run("RefusesClientsWithoutCredentials", func(t *testing.T) {
		t.Parallel()
		_, err := nats.Connect(srv.ClientURL(), tlsOpts...)
		require.ErrorIs(t, err, nats.ErrAuthorization)
		_, err = nats.Connect(srv.ClientURL(), nats.UserInfo("payment", "wrong"), tlsOpts[0], tlsOpts[1])
		require.ErrorIs(t, err, nats.ErrAuthorization)
		_, err = nats.Connect(srv.ClientURL(), nats.UserInfo("payment", securePassword("payment")), tlsOpts[0])
		require.Error(t, err, "no client certificate")
	})

	orch, _, _ := connect("orchestrator")
	require.NoError(t, outbox.EnsureStreams(t.Context(), orch, nil))

	// The payment service, as order-service --service payment --create-streams=false runs it.
	db, err := order.OpenDB(t.Context(), "sqlite:"+sqlitetest.Path(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	require.NoError(t, services.Migrate(t.Context(), order.ServicePayment, db, services.Options{}))
	payJS, payNC, payErrs := connect(order.ServicePayment)
	p, err := participant.New(db, payJS, &participant.Config{Service: order.ServicePayment, DisableStreamSetup: true})
	require.NoError(t, err)
	require.NoError(t, services.Register(order.ServicePayment, p, services.Options{}))
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(t.Context())
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})

	t.Run("ParticipantAnswersOverTLS", func(t *testing.T) {
		in, err := json.Marshal(map[string]any{"input": order.Input{OrderID: "o-1", Customer: "c", Items: []order.Item{{SKU: "sku-fig", Qty: 1}}, AmountCents: 250}})
		require.NoError(t, err)
		cmd := nats.NewMsg("saga.cmd.payment.ChargePayment")
		cmd.Data = in
		for k, v := range map[string]string{
			"Nats-Msg-Id": "m-1", "Sagaflow-Saga-Id": "s-1", "Sagaflow-Definition": order.Definition,
			"Sagaflow-Definition-Version": "1", "Sagaflow-Step": "charge-payment", "Sagaflow-Attempt": "1",
			"Sagaflow-Action": "forward", "Sagaflow-Reply-To": "saga.reply." + order.Definition,
		} {
			cmd.Header.Set(k, v)
		}
		_, err = orch.PublishMsg(t.Context(), cmd)
		require.NoError(t, err)
		c, err := orch.CreateConsumer(t.Context(), outbox.StreamReplies, jetstream.ConsumerConfig{AckPolicy: jetstream.AckExplicitPolicy})
		require.NoError(t, err)
		m, err := c.Next(jetstream.FetchMaxWait(60 * time.Second))
		require.NoError(t, err)
		require.Equal(t, "saga.reply."+order.Definition, m.Subject())
		require.Equal(t, "success", m.Headers().Get("Sagaflow-Outcome"))
		require.Equal(t, "s-1", m.Headers().Get("Sagaflow-Saga-Id"))
		require.NoError(t, m.Ack())
		require.Empty(t, payErrs, "the participant needed nothing its user may not do")
	})

	t.Run("RelayPublishesCommandsOnly", func(t *testing.T) {
		relay, _, relayErrs := connect("relay")
		require.NoError(t, outbox.EnsureStreams(t.Context(), relay, nil), "sagaflow relay ensures the streams at start")
		_, err := relay.Publish(t.Context(), "saga.cmd.nobody.Noop", []byte("{}"))
		require.NoError(t, err)
		_, err = relay.CreateOrUpdateConsumer(t.Context(), outbox.StreamReplies, jetstream.ConsumerConfig{
			Durable: "snoop", AckPolicy: jetstream.AckExplicitPolicy,
		})
		require.Error(t, err)
		waitViolation(relayErrs, "$JS.API.CONSUMER.CREATE.SAGA_REPLIES.snoop")
	})

	t.Run("ParticipantCannotReadAnotherServicesCommands", func(t *testing.T) {
		// A JetStream consumer on the shipping service's commands: the API request is refused.
		_, err := payJS.CreateOrUpdateConsumer(t.Context(), outbox.StreamCommands, jetstream.ConsumerConfig{
			Durable: participant.Durable(order.ServiceShipping), FilterSubject: "saga.cmd.shipping.>", AckPolicy: jetstream.AckExplicitPolicy,
		})
		require.Error(t, err)
		waitViolation(payErrs, "$JS.API.CONSUMER.CREATE.SAGA_COMMANDS.sagaflow-participant-shipping")
		// A plain subscription to the subjects, and publishing a command, are refused too.
		_, err = payNC.Subscribe("saga.cmd.shipping.>", func(*nats.Msg) {})
		require.NoError(t, err) // refused asynchronously
		waitViolation(payErrs, "saga.cmd.shipping.>")
		require.NoError(t, payNC.Publish("saga.cmd.shipping.ShipOrder", []byte("{}")))
		waitViolation(payErrs, "saga.cmd.shipping.ShipOrder")
		// Nor the reply subjects of other clients, where JetStream delivers their pulled commands.
		for _, inbox := range []string{"_INBOX.>", "_INBOX_shipping.>", ">"} {
			_, err = payNC.Subscribe(inbox, func(*nats.Msg) {})
			require.NoError(t, err)
			waitViolation(payErrs, inbox)
		}
	})
}
