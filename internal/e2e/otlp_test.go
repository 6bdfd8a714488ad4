package e2e_test

import (
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/grpc"

	"github.com/sagaflow/sagaflow/engine"
	order "github.com/sagaflow/sagaflow/examples/order"
	"github.com/sagaflow/sagaflow/examples/order/services"
	"github.com/sagaflow/sagaflow/internal/telemetry"
	"github.com/sagaflow/sagaflow/saga"
)

// receiver is an OTLP trace receiver built from the official OTLP protobuf service: it keeps every
// span it is sent, with its resource's service name and process id.
type receiver struct {
	collectortrace.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []receivedSpan
}

type receivedSpan struct {
	service, pid            string
	name                    string
	traceID, spanID, parent string
	start                   uint64
}

func (r *receiver) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		attrs := map[string]string{}
		for _, kv := range rs.GetResource().GetAttributes() {
			attrs[kv.GetKey()] = anyValue(kv.GetValue())
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				r.spans = append(r.spans, receivedSpan{
					service: attrs["service.name"], pid: attrs["process.pid"], name: s.GetName(),
					traceID: hex.EncodeToString(s.GetTraceId()), spanID: hex.EncodeToString(s.GetSpanId()),
					parent: hex.EncodeToString(s.GetParentSpanId()), start: s.GetStartTimeUnixNano(),
				})
			}
		}
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func anyValue(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return strconv.FormatInt(x.IntValue, 10)
	}
	return v.String()
}

func (r *receiver) received() []receivedSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.spans)
}

// startReceiver serves an OTLP/gRPC trace receiver on 127.0.0.1 until the test ends.
func startReceiver(t *testing.T) (*receiver, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	rec := &receiver{}
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, rec)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return rec, ln.Addr().String()
}

// TestOTLPExportFromTwoProcesses exports one saga's spans through the real OTLP/gRPC exporter from
// two processes — the orchestrator in a child process, the four services in this one — to a
// receiver inside the test, and finds one trace, with each service's span under its step's span.
func TestOTLPExportFromTwoProcesses(t *testing.T) {
	rec, addr := startReceiver(t)
	// The child inherits these; both processes export to the receiver.
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+addr)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	t.Setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
	t.Setenv("OTEL_TRACES_SAMPLER", "parentbased_always_on")
	t.Setenv(envOTLP, "1")

	e := newEnv(t)
	var providers []interface{ Shutdown(context.Context) error }
	tracers := map[string]trace.TracerProvider{}
	for _, s := range order.Services {
		tp, err := telemetry.NewTracerProvider(t.Context(), telemetry.Config{ServiceName: s, Traces: telemetry.TracesOTLP})
		require.NoError(t, err)
		providers = append(providers, tp)
		tracers[s] = tp
	}
	stack, stopServices := e.startStack(t, stackConfig{Definition: fastDefinition(t), Services: e.services,
		Options: services.Options{ShippingFailureRate: 1}, TracerProviderFunc: func(s string) trace.TracerProvider { return tracers[s] }})
	orch := startChild(t, e)

	in := order.NewGenerator(5, "otlp").Next()
	raw, err := json.Marshal(in)
	require.NoError(t, err)
	id, err := stack.Engine().Start(t.Context(), order.Definition, in.OrderID, raw, engine.StartOptions{})
	require.NoError(t, err)
	done, err := stack.Engine().Wait(t.Context(), id)
	require.NoError(t, err)
	require.Equal(t, saga.StatusCompensated, done.Status)

	// Stop both processes gracefully: each flushes its exporter on the way out.
	require.NoError(t, orch.cmd.Process.Signal(syscall.SIGTERM))
	<-orch.done
	require.Equal(t, 0, orch.cmd.ProcessState.ExitCode(), "the orchestrator child exits cleanly")
	stopServices()
	for _, p := range providers {
		require.NoError(t, p.Shutdown(context.Background()))
	}

	var spans []receivedSpan
	require.Eventually(t, func() bool {
		spans = nil
		for _, s := range rec.received() {
			if s.traceID == done.TraceID {
				spans = append(spans, s)
			}
		}
		return len(spans) >= 16
	}, 20*time.Second, 20*time.Millisecond, "16 spans of the saga's trace")

	pids := map[string]string{} // service -> pid
	byID := map[string]receivedSpan{}
	var roots, compensations []receivedSpan
	for _, s := range spans {
		pids[s.service] = s.pid
		byID[s.spanID] = s
		switch {
		case s.name == order.Definition:
			roots = append(roots, s)
		case strings.HasPrefix(s.name, "compensate "):
			compensations = append(compensations, s)
		}
	}
	require.Len(t, roots, 1)
	require.Equal(t, "sagaflow", roots[0].service)
	require.Len(t, pids, 5, "the orchestrator and the four services: %v", pids)
	require.Equal(t, strconv.Itoa(os.Getpid()), pids[order.ServicePayment], "the services ran in this process")
	require.Equal(t, strconv.Itoa(orch.cmd.Process.Pid), pids["sagaflow"], "the orchestrator ran in the child")
	for _, s := range spans {
		if s.service == "sagaflow" {
			continue
		}
		parent, ok := byID[s.parent]
		require.True(t, ok, "%s [%s] has its parent in the trace", s.name, s.service)
		if strings.HasPrefix(s.name, "process ") {
			require.Equal(t, "sagaflow", parent.service, "%s is a child of the orchestrator's span", s.name)
			require.True(t, strings.HasPrefix(parent.name, "step ") || strings.HasPrefix(parent.name, "compensate "), parent.name)
		}
	}
	slices.SortFunc(compensations, func(a, b receivedSpan) int { return cmp.Compare(a.start, b.start) })
	var names []string
	for _, c := range compensations {
		names = append(names, c.name)
	}
	require.Equal(t, []string{"compensate charge-payment", "compensate reserve-inventory", "compensate create-order"}, names)
}

// startOTLPChildProvider builds the orchestrator child's tracer provider when the parent asked for
// OTLP export (envOTLP), or returns nil.
func startOTLPChildProvider(ctx context.Context) (trace.TracerProvider, func(), error) {
	if os.Getenv(envOTLP) == "" {
		return nil, func() {}, nil
	}
	tp, err := telemetry.NewTracerProvider(ctx, telemetry.Config{ServiceName: "sagaflow", Traces: telemetry.TracesOTLP})
	if err != nil {
		return nil, nil, err
	}
	return tp, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = tp.Shutdown(sctx)
	}, nil
}
