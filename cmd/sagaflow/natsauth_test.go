package main

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	order "github.com/sagaflow/sagaflow/examples/order"
	"github.com/sagaflow/sagaflow/examples/order/services"
	"github.com/sagaflow/sagaflow/internal/natstest"
	"github.com/sagaflow/sagaflow/internal/sqlitetest"
	"github.com/sagaflow/sagaflow/participant"
)

// TestServeWithSecureNATS runs "sagaflow serve" against a nats-server configured by
// deploy/nats/secure.conf, as the orchestrator user over TLS with a client certificate (every
// option by its flag), and a payment participant as the payment user: a saga completes, and no
// password reaches the logs.
func TestServeWithSecureNATS(t *testing.T) {
	t.Parallel()
	ns := natstest.NewSecure(t, "../../deploy/nats/secure.conf")
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "shop.yaml"),
		[]byte("name: shop\nversion: 1\nsteps:\n  - name: pay\n    service: payment\n    command: Pay\n"), 0o600))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())

	var logs syncBuffer
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--db", "sqlite:" + sqlitetest.Path(t), "--definitions", dir, "--http", addr,
			"--log-format", "text", "--log-level", "debug", "--trace", "none",
			"--nats", ns.URL(), "--nats-user", "orchestrator", "--nats-password", natstest.Password("orchestrator"),
			"--nats-tls-ca", filepath.Join(ns.CertDir, "ca.pem"), "--nats-tls-cert", filepath.Join(ns.CertDir, "client.pem"),
			"--nats-tls-key", filepath.Join(ns.CertDir, "client-key.pem"), "--nats-inbox-prefix", "_INBOX_orchestrator",
		}, &logs, &logs)
	}()
	t.Cleanup(func() {
		cancel()
		require.Equal(t, 0, <-done, logs.String())
		require.NotContains(t, logs.String(), natstest.Password("orchestrator"))
		require.NotContains(t, logs.String(), `msg="nats error"`, "the orchestrator needs nothing its user may not do")
	})
	waitFor(t, &logs, "sagaflow serving", done)

	// The payment service, on its own user.
	nc, err := nats.Connect(ns.URL(), append(ns.TLSOptions(), nats.UserInfo("payment", natstest.Password("payment")),
		nats.CustomInboxPrefix("_INBOX_payment"))...)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	pdb := sqlitetest.New(t)
	require.NoError(t, participant.Migrate(t.Context(), pdb))
	p, err := participant.New(pdb, js, &participant.Config{Service: "payment", DisableStreamSetup: true})
	require.NoError(t, err)
	p.Handle("Pay", func(context.Context, *sqlx.Tx, participant.Command) (participant.Result, error) {
		return participant.Success(map[string]int{"paid": 1}), nil
	})
	require.NoError(t, p.Start(t.Context()))
	t.Cleanup(func() { require.NoError(t, p.Stop(context.Background())) })

	api := "http://" + addr
	code, stdout, stderr := runCLI(t, "start", "shop", "--key", "o-1", "--api", api)
	require.Equal(t, 0, code, stderr)
	id := strings.TrimSpace(stdout)
	status := regexp.MustCompile(`(?m)^Status:\s+(\S+)`)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		code, stdout, stderr = runCLI(t, "show", id, "--api", api)
		require.Equal(t, 0, code, stderr)
		m := status.FindStringSubmatch(stdout)
		require.NotNil(t, m, stdout)
		if m[1] == "completed" {
			break
		}
		require.True(t, slices.Contains([]string{"running"}, m[1]), stdout)
		select {
		case <-tick.C:
		case <-t.Context().Done():
			t.Fatalf("saga %s did not complete:\n%s\n%s", id, stdout, logs.String())
		}
	}
}

// TestConnectNATSLogsPermissionViolations: connectNATS logs the server's asynchronous errors, so
// a user missing a permission is seen in the logs, with no password in them.
func TestConnectNATSLogsPermissionViolations(t *testing.T) {
	t.Parallel()
	ns := natstest.NewSecure(t, "../../deploy/nats/secure.conf")
	var logs syncBuffer
	auth := natsAuthFlags{user: "payment", password: natstest.Password("payment"), inboxPrefix: "_INBOX_payment",
		tlsCA: filepath.Join(ns.CertDir, "ca.pem"), tlsCert: filepath.Join(ns.CertDir, "client.pem"), tlsKey: filepath.Join(ns.CertDir, "client-key.pem")}
	nc, err := connectNATS(ns.URL(), "test", auth, (&serverFlags{logFormat: "text", logLevel: "info"}).logger(&logs))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	_, err = nc.Subscribe("saga.cmd.shipping.>", func(*nats.Msg) {})
	require.NoError(t, err)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !strings.Contains(logs.String(), `msg="nats error"`) {
		select {
		case <-tick.C:
		case <-t.Context().Done():
			t.Fatalf("no nats error logged: %s", logs.String())
		}
	}
	require.Contains(t, logs.String(), "saga.cmd.shipping.>")
	require.NotContains(t, logs.String(), natstest.Password("payment"))
}

// TestOrderSagaOverSecureNATS runs the order saga (examples/order, four services) over a
// nats-server that requires TLS with client certificates and a user per component
// (deploy/nats/secure.conf): "sagaflow serve" on the orchestrator's user, each service on its
// own, and orders completing and compensating across all four.
func TestOrderSagaOverSecureNATS(t *testing.T) {
	t.Parallel()
	ns := natstest.NewSecure(t, "../../deploy/nats/secure.conf")
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "order-fulfilment.yaml"), order.DefinitionYAML(), 0o600))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())

	var logs syncBuffer
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--db", "sqlite:" + sqlitetest.Path(t), "--definitions", dir, "--http", addr,
			"--log-format", "text", "--trace", "none",
			"--nats", ns.URL(), "--nats-user", "orchestrator", "--nats-password", natstest.Password("orchestrator"),
			"--nats-tls-ca", filepath.Join(ns.CertDir, "ca.pem"), "--nats-tls-cert", filepath.Join(ns.CertDir, "client.pem"),
			"--nats-tls-key", filepath.Join(ns.CertDir, "client-key.pem"), "--nats-inbox-prefix", "_INBOX_orchestrator",
		}, &logs, &logs)
	}()
	t.Cleanup(func() {
		cancel()
		require.Equal(t, 0, <-done, logs.String())
		require.NotContains(t, logs.String(), `msg="nats error"`, "the orchestrator needs nothing its user may not do")
	})
	waitFor(t, &logs, "sagaflow serving", done)

	// The four services, each on its own NATS user and database; payment declines the orders the
	// seed picks, so some sagas compensate across the services.
	opts := services.Options{PaymentDeclineRate: 0.5, Seed: 7}
	for _, svc := range order.Services {
		nc, err := nats.Connect(ns.URL(), append(ns.TLSOptions(), nats.UserInfo(svc, natstest.Password(svc)),
			nats.CustomInboxPrefix("_INBOX_"+svc))...)
		require.NoError(t, err, svc)
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		require.NoError(t, err)
		db := sqlitetest.New(t)
		require.NoError(t, services.Migrate(t.Context(), svc, db, opts))
		p, err := participant.New(db, js, &participant.Config{Service: svc, DisableStreamSetup: true})
		require.NoError(t, err)
		require.NoError(t, services.Register(svc, p, opts))
		require.NoError(t, p.Start(t.Context()), svc)
		t.Cleanup(func() { require.NoError(t, p.Stop(context.Background())) })
	}

	api := "http://" + addr
	gen := order.NewGenerator(7, "secure-")
	finished := map[string]int{}
	for range 6 {
		in, err := json.Marshal(gen.Next())
		require.NoError(t, err)
		code, stdout, stderr := runCLI(t, "start", order.Definition, "--input", string(in), "--api", api)
		require.Equal(t, 0, code, stderr)
		id := strings.TrimSpace(stdout)
		status := regexp.MustCompile(`(?m)^Status:\s+(\S+)`)
		for {
			code, stdout, stderr = runCLI(t, "show", id, "--api", api)
			require.Equal(t, 0, code, stderr)
			m := status.FindStringSubmatch(stdout)
			require.NotNil(t, m, stdout)
			if m[1] == "completed" || m[1] == "compensated" {
				finished[m[1]]++
				break
			}
			require.True(t, slices.Contains([]string{"running", "compensating"}, m[1]), stdout)
			select {
			case <-time.After(50 * time.Millisecond):
			case <-t.Context().Done():
				t.Fatalf("saga %s did not finish:\n%s\n%s", id, stdout, logs.String())
			}
		}
	}
	require.Equal(t, 6, finished["completed"]+finished["compensated"], "every order finished: %v", finished)
	require.Positive(t, finished["completed"], "orders completed across the four services: %v", finished)
	require.Positive(t, finished["compensated"], "declined orders compensated across the services: %v", finished)
}
