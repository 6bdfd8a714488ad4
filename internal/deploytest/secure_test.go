package deploytest

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
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
	"github.com/sagaflow/sagaflow/internal/natstest"
	"github.com/sagaflow/sagaflow/internal/sqlitetest"
	"github.com/sagaflow/sagaflow/outbox"
	"github.com/sagaflow/sagaflow/participant"
)

// secureUsers are the users deploy/nats/secure.conf defines: one per component.
var secureUsers = append([]string{"orchestrator", "relay"}, order.Services...)

// securePath is the secure NATS sample.
var securePath = filepath.Join(root, "deploy/nats/secure.conf")

func TestNATSSecureConfig(t *testing.T) {
	t.Parallel()
	require.NotContains(t, string(read(t, "deploy/nats/secure.conf")), "pw-", "no password in the sample")
	opts, _ := natstest.SecureOptions(t, securePath)
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
		require.Equal(t, natstest.Password(name), u.Password, "%s: password from its variable", name)
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
	srv := natstest.NewSecure(t, securePath)
	tlsOpts := srv.TLSOptions()
	// connect connects as user over TLS; the async errors (permission violations) go to the channel.
	connect := func(user string) (jetstream.JetStream, *nats.Conn, <-chan error) {
		t.Helper()
		errs := make(chan error, 16)
		nc, err := nats.Connect(srv.URL(), append(slices.Clone(tlsOpts), nats.UserInfo(user, natstest.Password(user)),
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
		_, err := nats.Connect(srv.URL(), tlsOpts...)
		require.ErrorIs(t, err, nats.ErrAuthorization)
		_, err = nats.Connect(srv.URL(), nats.UserInfo("payment", "wrong"), tlsOpts[0], tlsOpts[1])
		require.ErrorIs(t, err, nats.ErrAuthorization)
		_, err = nats.Connect(srv.URL(), nats.UserInfo("payment", natstest.Password("payment")), tlsOpts[0])
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
