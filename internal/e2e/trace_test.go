package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/sagaflow/sagaflow/engine"
	order "github.com/sagaflow/sagaflow/examples/order"
	"github.com/sagaflow/sagaflow/examples/order/services"
	"github.com/sagaflow/sagaflow/saga"
)

// recorders gives every process of a test its own tracer provider (with its service.name) and
// in-memory span recorder, as separate processes would have.
type recorders struct {
	t    *testing.T
	recs map[string][]*tracetest.SpanRecorder // by service; several after a restart
}

func newRecorders(t *testing.T) *recorders {
	return &recorders{t: t, recs: map[string][]*tracetest.SpanRecorder{}}
}

// provider returns a new tracer provider for service, built as internal/telemetry builds one.
func (r *recorders) provider(service string) trace.TracerProvider {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithIDGenerator(engine.TraceIDGenerator()),
		sdktrace.WithResource(resource.NewSchemaless(semconv.ServiceName(service))))
	r.t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	r.recs[service] = append(r.recs[service], rec)
	return tp
}

// ended returns every ended span of traceID, from every provider.
func (r *recorders) ended(traceID string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, rs := range r.recs {
		for _, rec := range rs {
			for _, s := range rec.Ended() {
				if s.SpanContext().TraceID().String() == traceID {
					out = append(out, s)
				}
			}
		}
	}
	return out
}

// tree renders the spans as an indented tree, children in start order: "name [service]".
func tree(spans []sdktrace.ReadOnlySpan) string {
	children := map[trace.SpanID][]sdktrace.ReadOnlySpan{}
	ids := map[trace.SpanID]bool{}
	for _, s := range spans {
		ids[s.SpanContext().SpanID()] = true
	}
	var roots []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if p := s.Parent().SpanID(); p.IsValid() && ids[p] {
			children[p] = append(children[p], s)
		} else {
			roots = append(roots, s)
		}
	}
	var b strings.Builder
	var walk func(s sdktrace.ReadOnlySpan, depth int)
	walk = func(s sdktrace.ReadOnlySpan, depth int) {
		service, _ := s.Resource().Set().Value(semconv.ServiceNameKey)
		fmt.Fprintf(&b, "%s%s [%s]\n", strings.Repeat("  ", depth), s.Name(), service.AsString())
		kids := children[s.SpanContext().SpanID()]
		slices.SortStableFunc(kids, func(a, b sdktrace.ReadOnlySpan) int { return a.StartTime().Compare(b.StartTime()) })
		for _, k := range kids {
			walk(k, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}
	return b.String()
}

// shippingFailsTree is the trace of an order whose shipping fails: the root, a span per step
// attempt with the participant's span below it (and the payment handler's own span below that),
// then the compensations in reverse order.
const shippingFailsTree = `order-fulfilment [sagaflow]
  step create-order [sagaflow]
    process saga.cmd.order.CreateOrder [order]
  step reserve-inventory [sagaflow]
    process saga.cmd.inventory.ReserveInventory [inventory]
  step charge-payment [sagaflow]
    process saga.cmd.payment.ChargePayment [payment]
      authorize card [payment]
  step schedule-shipping [sagaflow]
    process saga.cmd.shipping.ScheduleShipping [shipping]
  compensate charge-payment [sagaflow]
    process saga.cmd.payment.RefundPayment [payment]
  compensate reserve-inventory [sagaflow]
    process saga.cmd.inventory.ReleaseInventory [inventory]
  compensate create-order [sagaflow]
    process saga.cmd.order.CancelOrder [order]
`

// patientDefinition is fastDefinition with step deadlines no busy machine reaches: the trace tests
// compare exact span trees, and a timed-out attempt (a second orchestrator starting slowly at load
// 8 once took longer than fastDefinition's 2 s) would add a legitimate retry span to the tree.
func patientDefinition(t *testing.T) *saga.Definition {
	t.Helper()
	def := fastDefinition(t)
	for i := range def.Steps {
		def.Steps[i].Timeout = 10 * time.Minute
	}
	return def
}

// startTracedServices runs the four services, shipping failing every order, each with its own
// recorded tracer provider.
func (e *env) startTracedServices(t *testing.T, recs *recorders) {
	t.Helper()
	tracers := map[string]trace.TracerProvider{}
	for _, s := range order.Services {
		tracers[s] = recs.provider(s)
	}
	e.startStack(t, stackConfig{Definition: patientDefinition(t), Services: e.services,
		Options: services.Options{ShippingFailureRate: 1}, TracerProviderFunc: func(s string) trace.TracerProvider { return tracers[s] }})
}

// startTracedOrchestrator runs an orchestrator node alone, with a new recorded tracer provider (as
// a new process would have).
func (e *env) startTracedOrchestrator(t *testing.T, recs *recorders) (*testStack, func()) {
	t.Helper()
	tp := recs.provider(orchestratorService)
	return e.startStack(t, stackConfig{Definition: patientDefinition(t), RunOrchestrator: true,
		Services: map[string]serviceDB{}, TracerProviderFunc: func(string) trace.TracerProvider { return tp }})
}

func TestTraceOfOneOrderAcrossServices(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	recs := newRecorders(t)
	e.startTracedServices(t, recs)
	stack, _ := e.startTracedOrchestrator(t, recs)

	in := finishOrder(t, stack.Engine(), stack, nil)
	requireSagaTrace(t, recs, in)
}

func TestTraceIsTheSameWhenTheOrchestratorRestartsBetweenSteps(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	recs := newRecorders(t)
	e.startTracedServices(t, recs)
	stack1, stop1 := e.startTracedOrchestrator(t, recs)

	// Stop the first orchestrator as soon as the first step's reply is applied: the second step's
	// command is then sent (or about to be), and its reply is applied by the second orchestrator.
	in := finishOrder(t, stack1.Engine(), nil, func(id string) {
		require.Eventually(t, func() bool {
			hist, err := stack1.Engine().History(t.Context(), id)
			require.NoError(t, err)
			return slices.ContainsFunc(hist, func(h engine.HistoryEntry) bool {
				return h.Kind == engine.HistoryReply && h.Step == "create-order"
			})
		}, 30*time.Second, 5*time.Millisecond)
		stop1()
	})
	stack2, _ := e.startTracedOrchestrator(t, recs)
	done, err := stack2.Engine().Wait(t.Context(), in.ID)
	require.NoError(t, err)
	require.Equal(t, saga.StatusCompensated, done.Status)
	spans := requireSagaTrace(t, recs, done)

	// Both orchestrators recorded part of the tree: the first step by the first, the rest by the
	// second, yet the tree is the one above.
	byOrchestrator := func(rec *tracetest.SpanRecorder) []string {
		var names []string
		for _, s := range rec.Ended() {
			if s.SpanContext().TraceID().String() == done.TraceID {
				names = append(names, s.Name())
			}
		}
		return names
	}
	firstNames := byOrchestrator(recs.recs[orchestratorService][0])
	secondNames := byOrchestrator(recs.recs[orchestratorService][1])
	require.Contains(t, firstNames, "step create-order")
	require.NotContains(t, firstNames, "order-fulfilment", "the first orchestrator did not see the saga finish")
	require.Contains(t, secondNames, "order-fulfilment")
	require.Contains(t, secondNames, "compensate create-order")
	require.Len(t, spans, len(strings.Split(strings.TrimSpace(shippingFailsTree), "\n")))
}

// finishOrder starts one order through e. With stack set it waits for the saga to finish there;
// otherwise it calls between(id) and returns the instance as started.
func finishOrder(t *testing.T, e *engine.Engine, stack *testStack, between func(id string)) *engine.Instance {
	t.Helper()
	input := order.NewGenerator(1, "trace").Next()
	raw, err := json.Marshal(input)
	require.NoError(t, err)
	id, err := e.Start(t.Context(), order.Definition, input.OrderID, raw, engine.StartOptions{})
	require.NoError(t, err)
	if stack == nil {
		between(id)
		in, err := e.Get(t.Context(), id)
		require.NoError(t, err)
		return in
	}
	in, err := e.Wait(t.Context(), id)
	require.NoError(t, err)
	require.Equal(t, saga.StatusCompensated, in.Status)
	return in
}

// requireSagaTrace asserts the saga's trace: one trace id (the instance's), the exact tree, the
// root's true start and end, and every step span covering its participant's span.
func requireSagaTrace(t *testing.T, recs *recorders, in *engine.Instance) []sdktrace.ReadOnlySpan {
	t.Helper()
	require.Len(t, in.TraceID, 32)
	var spans []sdktrace.ReadOnlySpan
	want := len(strings.Split(strings.TrimSpace(shippingFailsTree), "\n"))
	// The participants' and the relay-side spans end asynchronously to the saga's finish.
	require.Eventually(t, func() bool {
		spans = recs.ended(in.TraceID)
		return len(spans) >= want
	}, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, shippingFailsTree, tree(spans))

	byID := map[trace.SpanID]sdktrace.ReadOnlySpan{}
	var root sdktrace.ReadOnlySpan
	for _, s := range spans {
		byID[s.SpanContext().SpanID()] = s
		if s.Name() == order.Definition {
			root = s
		}
	}
	require.NotNil(t, root)
	require.False(t, root.Parent().IsValid(), "the root span has no parent")
	require.True(t, root.StartTime().Equal(in.CreatedAt), "root starts when the saga started: %s vs %s", root.StartTime(), in.CreatedAt)
	require.True(t, root.EndTime().Equal(in.FinishedAt), "root ends when the saga finished: %s vs %s", root.EndTime(), in.FinishedAt)
	requireAttr(t, root, "sagaflow.saga_id", in.ID)
	requireAttr(t, root, "sagaflow.business_key", in.BusinessKey)
	requireAttr(t, root, "sagaflow.status", string(saga.StatusCompensated))

	for _, s := range spans {
		parent, ok := byID[s.Parent().SpanID()]
		if !ok {
			continue
		}
		// A child starts no earlier than its parent. A participant's span starts before the step
		// span that waits for its reply ends (it may end a moment after: the participant acks the
		// command after its commit, by when the reply may be out and applied); a handler's own span
		// lies within the participant's.
		require.False(t, s.StartTime().Before(parent.StartTime()), "%s starts before its parent %s", s.Name(), parent.Name())
		require.True(t, s.StartTime().Before(parent.EndTime()), "%s starts after its parent %s ended", s.Name(), parent.Name())
		if !strings.HasPrefix(s.Name(), "process ") {
			require.False(t, s.EndTime().After(parent.EndTime()), "%s ends after its parent %s", s.Name(), parent.Name())
		}
		switch {
		case strings.HasPrefix(s.Name(), "step "), strings.HasPrefix(s.Name(), "compensate "):
			require.Equal(t, trace.SpanKindProducer, s.SpanKind())
			requireAttr(t, s, "sagaflow.saga_id", in.ID)
			requireAttr(t, s, "messaging.system", "nats")
			require.Len(t, s.Links(), 1, "%s links the reply that ended it", s.Name())
		case strings.HasPrefix(s.Name(), "process "):
			require.Equal(t, trace.SpanKindConsumer, s.SpanKind())
			requireAttr(t, s, "sagaflow.saga_id", in.ID)
			requireAttr(t, s, "messaging.destination.name", strings.TrimPrefix(s.Name(), "process "))
			requireAttr(t, s, "sagaflow.step", strings.TrimPrefix(strings.TrimPrefix(parent.Name(), "step "), "compensate "))
		}
	}
	return spans
}

func requireAttr(t *testing.T, s sdktrace.ReadOnlySpan, key, want string) {
	t.Helper()
	for _, kv := range s.Attributes() {
		if kv.Key == attribute.Key(key) {
			require.Equal(t, want, kv.Value.String(), "%s: %s", s.Name(), key)
			return
		}
	}
	t.Fatalf("span %s has no attribute %s", s.Name(), key)
}
