package console_test

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/engine"
	"github.com/sagaflow/sagaflow/internal/natstest"
	"github.com/sagaflow/sagaflow/internal/pgtest"
	"github.com/sagaflow/sagaflow/internal/server"
	"github.com/sagaflow/sagaflow/internal/sqlitetest"
	"github.com/sagaflow/sagaflow/participant"
	"github.com/sagaflow/sagaflow/saga"
)

// chromiumPath is Debian's chromium, which scripts/test.sh installs when it is missing;
// SAGAFLOW_CHROMIUM names another binary.
func chromiumPath(t *testing.T) string {
	t.Helper()
	path := cmp.Or(os.Getenv("SAGAFLOW_CHROMIUM"), "/usr/bin/chromium")
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("headless Chromium not found at %s (%v): run scripts/test.sh, which installs Debian's chromium package, "+
			"or set SAGAFLOW_CHROMIUM to a Chromium binary", path, err)
	}
	return path
}

// stack is a whole orchestrator node (engine, relay, API and console on PostgreSQL and an
// in-process NATS) with three participant services built on the public participant package:
//   - stock reserves and releases; its release of a saga whose key holds "hang" waits for gate;
//   - payment charges and refunds;
//   - courier books (a key holding "fail" is refused: the saga compensates; "hang": the courier's
//     API is down, the command is dead-lettered and the saga waits for the reply an hour) and
//     cancels bookings.
type stack struct {
	node     *server.Node
	url      string
	openGate func()
}

func setupStack(t *testing.T) *stack {
	t.Helper()
	ctx := t.Context()
	db := pgtest.New(t)
	db.SetMaxOpenConns(4)
	require.NoError(t, engine.Migrate(ctx, db))
	reg := definitions.NewRegistry()
	once := saga.RetryPolicy{MaxAttempts: 1}
	v1, err := definitions.New("order", 1).Description("Reserve stock, charge the card, book a courier.").DefaultTimeout(30*time.Second).
		Step("reserve-stock", "stock", "Reserve").Compensation("Release").
		Step("charge-card", "payment", "Charge").Compensation("Refund").
		Step("book-courier", "courier", "Book").Compensation("CancelBooking").Timeout(time.Hour).Retry(once).Build()
	require.NoError(t, err)
	v2, err := definitions.New("order", 2).Description("Version 2 tells the customer once the courier is booked.").Pivot("book-courier").
		Step("reserve-stock", "stock", "Reserve").Compensation("Release").
		Step("charge-card", "payment", "Charge").Compensation("Refund").
		Step("book-courier", "courier", "Book").Compensation("CancelBooking").
		Step("notify-customer", "mailer", "Notify").Build()
	require.NoError(t, err)
	require.NoError(t, reg.Register(v1))
	require.NoError(t, reg.Register(v2))

	ns := natstest.New(t, nil)
	node, err := server.New(ctx, server.Config{
		DB: db, NATS: ns.Connect(t), Definitions: reg, Orchestrator: true, Relay: true, HTTPAddr: "127.0.0.1:0",
		Auth: testAuth(t), TraceURL: "http://jaeger.test:16686/trace/{trace_id}",
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	require.NoError(t, err)
	run(t, node.Run)

	gate := make(chan struct{})
	var closeGate sync.Once
	s := &stack{node: node, url: "http://" + node.Addr(), openGate: func() { closeGate.Do(func() { close(gate) }) }}
	t.Cleanup(s.openGate)
	js := ns.JetStream(t)
	ok := func(out any) participant.Handler {
		return func(context.Context, *sqlx.Tx, participant.Command) (participant.Result, error) {
			return participant.Success(out), nil
		}
	}
	startParticipant(t, js, "stock", func(p *participant.Participant) {
		p.Handle("Reserve", ok(map[string]string{"reservation": "R-1", "warehouse": "north"}))
		p.Compensate("Release", func(ctx context.Context, _ *sqlx.Tx, cmd participant.Command) (participant.Result, error) {
			if strings.Contains(cmd.BusinessKey, "hang") {
				select {
				case <-gate:
				case <-ctx.Done():
					return participant.Result{}, ctx.Err()
				}
			}
			return participant.Success(nil), nil
		})
	})
	startParticipant(t, js, "payment", func(p *participant.Participant) {
		p.Handle("Charge", ok(map[string]any{"charge_id": "ch_42", "amount": 4200, "currency": "EUR"}))
		p.Compensate("Refund", ok(map[string]string{"refund_id": "re_42"}))
	})
	startParticipant(t, js, "courier", func(p *participant.Participant) {
		p.Handle("Book", func(_ context.Context, _ *sqlx.Tx, cmd participant.Command) (participant.Result, error) {
			switch {
			case strings.Contains(cmd.BusinessKey, "fail"):
				return participant.Failure("no courier serves the delivery address"), nil
			case strings.Contains(cmd.BusinessKey, "hang"):
				return participant.Result{}, errors.New("courier API unreachable: connection refused")
			}
			return participant.Success(map[string]string{"booking": "B-7"}), nil
		})
		p.Compensate("CancelBooking", ok(nil))
	})
	return s
}

func startParticipant(t *testing.T, js jetstream.JetStream, service string, register func(*participant.Participant)) {
	t.Helper()
	db := sqlitetest.New(t)
	require.NoError(t, participant.Migrate(t.Context(), db))
	p, err := participant.New(db, js, &participant.Config{Service: service, MaxDeliver: 2, NakDelay: 50 * time.Millisecond, AckWait: 5 * time.Minute})
	require.NoError(t, err)
	register(p)
	require.NoError(t, p.Start(t.Context()))
	t.Cleanup(func() { require.NoError(t, p.Stop(context.Background())) })
}

// run runs fn until the test ends and checks it returned nil.
func run(t *testing.T, fn func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan error, 1)
	go func() {
		err := fn(ctx)
		if ctx.Err() == nil {
			t.Errorf("stopped before the test ended: %v", err) // say so now: the browser would only time out
		}
		done <- err
	}()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
}

func (s *stack) start(t *testing.T, key string) string {
	t.Helper()
	id, err := s.node.Engine().Start(t.Context(), "order", key, json.RawMessage(`{"order_id":"`+key+`","items":[{"sku":"tea-01","qty":2}],"address":"1 Quay St"}`),
		engine.StartOptions{Version: 1, Actor: "test"})
	require.NoError(t, err)
	return id
}

// waitFor polls cond until it holds or the test's context ends.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-t.Context().Done():
			t.Fatalf("%s: %v", what, t.Context().Err())
		case <-tick.C:
		}
	}
}

// browser starts a headless Chromium for the test and returns its tab's context.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath(t)), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 800),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.WithoutCancel(t.Context()), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(cancel)
	require.NoError(t, chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800)), "start Chromium")
	return ctx
}

// do runs actions in the tab, each step bounded so a page that never comes fails the test.
func do(t *testing.T, ctx context.Context, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	require.NoError(t, chromedp.Do(sctx, actions...))
}

// eval evaluates a JavaScript expression in the tab.
func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	v, err := chromedp.Run(sctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	require.NoError(t, err, expr)
	return v
}

// until waits for a JavaScript predicate to hold in the tab, asking again (every 50 ms) while a
// page loads.
func until(t *testing.T, ctx context.Context, what, predicate string) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		ok, err := chromedp.Run(sctx, chromedp.Evaluate[bool](predicate))
		if err == nil && ok {
			return
		}
		last = err
		select {
		case <-sctx.Done():
			t.Fatalf("%s: %s did not hold: %v (last error: %v)", what, predicate, sctx.Err(), last)
		case <-tick.C:
		}
	}
}

// screenshot saves the tab as docs' screenshot name when SAGAFLOW_CONSOLE_SCREENSHOTS names a directory.
func screenshot(t *testing.T, ctx context.Context, name string, full bool) {
	t.Helper()
	dir := os.Getenv("SAGAFLOW_CONSOLE_SCREENSHOTS")
	if dir == "" {
		return
	}
	shot := chromedp.CaptureScreenshot()
	if full {
		shot = chromedp.FullScreenshot(100)
	}
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	png, err := chromedp.Run(sctx, shot)
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644))
}

// follow goes where the first link sel matches leads. (Clicking it would race with a live update
// swapping the link for its fresh copy.)
func follow(t *testing.T, ctx context.Context, sel string) {
	t.Helper()
	href := eval[string](t, ctx, `document.querySelector(`+strconv.Quote(sel)+`).href`)
	do(t, ctx, chromedp.Navigate(href))
}

// submit clicks a form's button sel and waits until the page the form leads to satisfies the
// JavaScript predicate loaded (which the page with the form must not).
func submit(t *testing.T, ctx context.Context, sel, loaded string) {
	t.Helper()
	do(t, ctx, chromedp.Click(chromedp.CSS(sel)))
	until(t, ctx, "the page after "+sel, `document.readyState === "complete" && (`+loaded+`)`)
}

func signIn(t *testing.T, ctx context.Context, base, token string) {
	t.Helper()
	do(t, ctx,
		chromedp.Navigate(base+"/ui/sagas"),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), token),
	)
	submit(t, ctx, "main form button[type=submit]", `document.querySelector("form.filters") !== null`)
}

// TestBrowser drives the console in headless Chromium against a running node: an operator
// searches an order by its key, opens it and sees its steps and its compensations in order,
// cancels a running saga and sees it compensate without reloading the page; a viewer sees no
// cancel button and a forged POST is refused. Along the way it visits the definitions and the
// dead letters, purging one and replaying another.
func TestBrowser(t *testing.T) {
	t.Parallel()
	chromiumPath(t) // before the stack: a missing browser fails at once
	s := setupStack(t)
	ctx := t.Context()
	eng := s.node.Engine()
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	for _, key := range []string{"order-1001", "order-fail-1002", "order-1005", "order-fail-1006", "order-1007"} {
		id := s.start(t, key)
		inst, err := eng.Wait(wctx, id)
		require.NoError(t, err)
		want := saga.StatusCompleted
		if strings.Contains(key, "fail") {
			want = saga.StatusCompensated
		}
		require.Equal(t, want, inst.Status, key)
	}
	hang := s.start(t, "order-hang-1003")
	stays := s.start(t, "order-hang-1004")
	for _, id := range []string{hang, stays} {
		waitFor(t, "saga "+id+" waits for the courier", func() bool {
			inst, err := eng.Get(ctx, id)
			require.NoError(t, err)
			return inst.Step == 2 && inst.Steps[2].Status == saga.StepRunning
		})
	}

	b := browser(t)
	signIn(t, b, s.url, operatorToken)
	screenshot(t, b, "sagas", false)

	// Search an order by its key and open it: its steps, then its compensations in the order they ran.
	do(t, b,
		chromedp.SendKeys(chromedp.CSS("#f-key"), "order-fail-1002"),
		chromedp.Click(chromedp.CSS("form.filters button[type=submit]")),
	)
	until(t, b, "the search shows one saga", `location.search.includes("key=order-fail-1002") && document.querySelectorAll("table.list tbody tr").length === 1`)
	follow(t, b, "table.list tbody a")
	until(t, b, "the saga's page", `document.querySelector("#steps") !== null`)
	require.Equal(t, "compensated", eval[string](t, b, `document.getElementById("saga-status").textContent`))
	require.Equal(t, []string{"reserve-stock: compensated", "charge-card: compensated", "book-courier: failed"},
		eval[[]string](t, b, `[...document.querySelectorAll("#steps > li")].map(li => li.dataset.step + ": " + li.querySelector(".status").textContent)`))
	require.Equal(t, []string{"charge-card", "reserve-stock"},
		eval[[]string](t, b, `[...document.querySelectorAll("#compensations > li")].map(li => li.dataset.step)`), "compensations in reverse order")
	require.Contains(t, eval[string](t, b, `document.querySelector("#steps").textContent`), "no courier serves the delivery address")
	require.True(t, strings.HasPrefix(eval[string](t, b, `document.querySelector("a[href^='http://jaeger.test']").href`), "http://jaeger.test:16686/trace/"))
	screenshot(t, b, "saga-compensated", true)

	// Cancel the running saga: the confirmation needs a reason; then the page follows the
	// compensation live, without a reload (the marker set on the page survives).
	// (The actions are in a live region: the summary is clicked by script, in one step.)
	do(t, b, chromedp.Navigate(s.url+"/ui/sagas/"+hang))
	until(t, b, "the cancel button", `document.querySelector('details[data-action="cancel"] summary') !== null`)
	eval[bool](t, b, `document.querySelector('details[data-action="cancel"] summary').click(); true`)
	until(t, b, "the cancel form opens", `document.querySelector('details[data-action="cancel"]').open`)
	require.Equal(t, "running", eval[string](t, b, `document.getElementById("saga-status").textContent`))
	require.True(t, eval[bool](t, b, `document.getElementById("reason-cancel").required`), "a reason is required")
	do(t, b, chromedp.SendKeys(chromedp.CSS("#reason-cancel"), "customer called to cancel"))
	screenshot(t, b, "saga-cancel", false)
	submit(t, b, `details[data-action="cancel"] button[type=submit]`, `document.querySelector("p.flash") !== null`)
	require.Equal(t, "compensating", eval[string](t, b, `document.getElementById("saga-status").textContent`),
		"stock's release waits for the gate")
	eval[bool](t, b, `window.sagaflowTestMarker = "same page"; true`)
	s.openGate()
	until(t, b, "the page shows the saga compensated", `document.getElementById("saga-status").textContent === "compensated"`)
	require.Equal(t, "same page", eval[string](t, b, `window.sagaflowTestMarker`), "updated without a reload")
	require.True(t, eval[bool](t, b, `document.querySelector('details[data-action="cancel"]') === null`), "nothing left to cancel")
	require.Equal(t, []string{"book-courier", "charge-card", "reserve-stock"},
		eval[[]string](t, b, `[...document.querySelectorAll("#compensations > li")].map(li => li.dataset.step)`))
	inst, err := eng.Get(ctx, hang)
	require.NoError(t, err)
	require.Equal(t, saga.StatusCompensated, inst.Status)
	hist, err := eng.History(ctx, hang)
	require.NoError(t, err)
	var actor string
	for _, h := range hist {
		if h.Kind == engine.HistoryCancel {
			actor = h.Actor
		}
	}
	require.Equal(t, "olga", actor, "the operator's token name is recorded")

	// The other pages.
	do(t, b, chromedp.Navigate(s.url+"/ui/definitions"))
	until(t, b, "the flows", `document.querySelector(".flow") !== null`)
	require.Equal(t, 7, eval[int](t, b, `document.querySelectorAll(".flow-row.forward .box").length`), "v1's three steps and v2's four")
	screenshot(t, b, "definitions", false)

	// Both hanging sagas' Book commands are dead-lettered by the courier; the list shows them as they come.
	do(t, b, chromedp.Navigate(s.url+"/ui/dlq"), chromedp.WaitVisible(chromedp.CSS("form.filters")))
	until(t, b, "the dead letters appear", `document.querySelectorAll("table.list tbody tr").length === 2`)
	screenshot(t, b, "dlq", false)
	follow(t, b, "table.list tbody tr:last-child a")
	do(t, b, chromedp.WaitVisible(chromedp.CSS(`details[data-action="purge"] summary`)))
	require.Contains(t, eval[string](t, b, `document.querySelector(".error-box").textContent`), "courier API unreachable")
	screenshot(t, b, "dead-letter", false)
	do(t, b,
		chromedp.Click(chromedp.CSS(`details[data-action="purge"] summary`)),
		chromedp.SendKeys(chromedp.CSS("#reason-purge"), "the saga was cancelled"),
	)
	submit(t, b, `details[data-action="purge"] button[type=submit]`, `document.querySelector("p.flash") !== null`)
	require.Equal(t, 1, eval[int](t, b, `document.querySelectorAll("table.list tbody tr").length`), "purged")
	// Replay the other: it leaves the queue (the courier, still down, may dead-letter it again, under a new sequence).
	seq := eval[string](t, b, `document.querySelector("table.list tbody a").textContent`)
	follow(t, b, "table.list tbody a")
	do(t, b,
		chromedp.WaitVisible(chromedp.CSS(`details[data-action="replay"] summary`)),
		chromedp.Click(chromedp.CSS(`details[data-action="replay"] summary`)),
		chromedp.SendKeys(chromedp.CSS("#reason-replay"), "courier API is back"),
	)
	submit(t, b, `details[data-action="replay"] button[type=submit]`, `document.querySelector("p.flash") !== null`)
	require.True(t, eval[bool](t, b, `document.querySelector('a[href="/ui/dlq/`+seq+`"]') === null`), "dead letter %s replayed", seq)

	do(t, b, chromedp.EmulateViewport(390, 844), chromedp.Navigate(s.url+"/ui/sagas"), chromedp.WaitVisible(chromedp.CSS("form.filters")))
	require.LessOrEqual(t, eval[int](t, b, `document.documentElement.scrollWidth`), 390, "no horizontal scrolling on a narrow screen")
	screenshot(t, b, "sagas-narrow", false)
	do(t, b, chromedp.EmulateViewport(1280, 800))

	// A viewer: no cancel button on a running saga, and a forged POST (with the viewer's own CSRF
	// token) is refused.
	submit(t, b, ".who button", `document.querySelector("#token") !== null`)
	signIn(t, b, s.url, viewerToken)
	do(t, b, chromedp.Navigate(s.url+"/ui/sagas/"+stays))
	until(t, b, "the saga's page", `document.querySelector("#steps") !== null`)
	require.Equal(t, "running", eval[string](t, b, `document.getElementById("saga-status").textContent`))
	require.True(t, eval[bool](t, b, `document.querySelector('details[data-action="cancel"]') === null`), "a viewer sees no cancel button")
	require.Equal(t, 403, eval[int](t, b, `fetch(location.pathname + "/cancel", {method: "POST",
		body: new URLSearchParams({csrf: document.querySelector("input[name=csrf]").value, reason: "forged"})}).then(r => r.status)`))
	inst, err = eng.Get(ctx, stays)
	require.NoError(t, err)
	require.Equal(t, saga.StatusRunning, inst.Status, "the forged POST changed nothing")
}
