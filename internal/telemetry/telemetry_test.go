package telemetry_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/sagaflow/sagaflow/internal/telemetry"
)

func TestIDGeneratorHonoursRequestedIDs(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithIDGenerator(telemetry.NewIDGenerator()))
	tracer := tp.Tracer("test")
	tid := telemetry.NewTraceID()
	rootID := telemetry.DerivedSpanID("saga-1", "saga")
	childID := telemetry.DerivedSpanID("saga-1", "step-a", "forward", "1")

	ctx, root := tracer.Start(telemetry.WithIDs(context.Background(), tid, rootID), "root", trace.WithNewRoot())
	require.Equal(t, tid, root.SpanContext().TraceID())
	require.Equal(t, rootID, root.SpanContext().SpanID())
	_, child := tracer.Start(telemetry.WithIDs(ctx, tid, childID), "child")
	require.Equal(t, tid, child.SpanContext().TraceID(), "a child keeps its parent's trace")
	require.Equal(t, childID, child.SpanContext().SpanID())
	require.Equal(t, rootID, child.(sdktrace.ReadOnlySpan).Parent().SpanID())

	// Without a request, ids are random and distinct.
	seen := map[trace.SpanID]bool{rootID: true, childID: true}
	for range 1000 {
		_, s := tracer.Start(ctx, "other")
		require.True(t, s.SpanContext().SpanID().IsValid())
		require.False(t, seen[s.SpanContext().SpanID()], "span id repeated")
		seen[s.SpanContext().SpanID()] = true
	}
	_, r := tracer.Start(context.Background(), "another root")
	require.NotEqual(t, tid, r.SpanContext().TraceID())
}

func TestDerivedSpanIDIsAFunctionOfItsParts(t *testing.T) {
	a := telemetry.DerivedSpanID("s", "step", "forward", "1")
	require.Equal(t, a, telemetry.DerivedSpanID("s", "step", "forward", "1"))
	require.True(t, a.IsValid())
	for _, other := range [][]string{{"s", "step", "forward", "2"}, {"s", "step", "compensate", "1"}, {"s", "ste", "pforward", "1"}, {"t", "step", "forward", "1"}} {
		require.NotEqual(t, a, telemetry.DerivedSpanID(other...), "%v", other)
	}
}

func TestInjectKeepsAnExistingParentAndExtractReadsIt(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	ctx, span := tp.Tracer("test").Start(context.Background(), "producer")
	defer span.End()

	md := message.Metadata{}
	telemetry.Inject(ctx, md)
	require.Regexp(t, `^00-[0-9a-f]{32}-[0-9a-f]{16}-01$`, md.Get("traceparent"))
	sc := telemetry.SpanContextOf(md)
	require.Equal(t, span.SpanContext().TraceID(), sc.TraceID())
	require.Equal(t, span.SpanContext().SpanID(), sc.SpanID())
	require.True(t, sc.IsRemote())

	const mine = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	md = message.Metadata{"traceparent": mine}
	telemetry.Inject(ctx, md)
	require.Equal(t, mine, md.Get("traceparent"), "a message's own parent is kept")

	md = message.Metadata{}
	telemetry.Inject(context.Background(), md)
	require.Empty(t, md, "no span, no header")
	require.False(t, telemetry.SpanContextOf(message.Metadata{"traceparent": "garbage"}).IsValid())
}

func TestStdoutTracesAreOneJSONObjectPerSpan(t *testing.T) {
	var buf bytes.Buffer
	tp, err := telemetry.NewTracerProvider(t.Context(), telemetry.Config{ServiceName: "svc-a", Traces: telemetry.TracesStdout, TraceWriter: &buf})
	require.NoError(t, err)
	tracer := tp.Tracer("test")
	for _, name := range []string{"one", "two", "three"} {
		_, s := tracer.Start(t.Context(), name)
		s.End()
	}
	require.NoError(t, tp.Shutdown(t.Context()))
	var names []string
	sc := bufio.NewScanner(&buf)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var span struct {
			Name     string
			Resource []struct {
				Key   string
				Value struct{ Value any }
			}
		}
		require.NoError(t, json.Unmarshal(sc.Bytes(), &span), "line %q", sc.Text())
		names = append(names, span.Name)
		service := ""
		for _, kv := range span.Resource {
			if kv.Key == "service.name" {
				service, _ = kv.Value.Value.(string)
			}
		}
		require.Equal(t, "svc-a", service)
	}
	require.Equal(t, []string{"one", "two", "three"}, names)
}

func TestServiceNameFromTheEnvironmentWins(t *testing.T) {
	t.Setenv("OTEL_SERVICE_NAME", "from-env")
	res, err := telemetry.Resource(t.Context(), telemetry.Config{ServiceName: "from-code"})
	require.NoError(t, err)
	v, ok := res.Set().Value("service.name")
	require.True(t, ok)
	require.Equal(t, "from-env", v.AsString())
}

func TestTraceModes(t *testing.T) {
	_, err := telemetry.NewTracerProvider(t.Context(), telemetry.Config{Traces: "jaeger"})
	require.ErrorContains(t, err, `trace export "jaeger": want auto, otlp, stdout, none`)

	// auto without OTLP settings exports nothing (but still makes sampled spans).
	for _, k := range []string{"OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"} {
		t.Setenv(k, "")
	}
	tp, err := telemetry.NewTracerProvider(t.Context(), telemetry.Config{Traces: telemetry.TracesAuto})
	require.NoError(t, err)
	_, s := tp.Tracer("test").Start(t.Context(), "x")
	require.True(t, s.SpanContext().IsSampled())
	s.End()
	require.NoError(t, tp.Shutdown(t.Context()))

	// The sampler follows OTEL_TRACES_SAMPLER.
	t.Setenv("OTEL_TRACES_SAMPLER", "always_off")
	tp, err = telemetry.NewTracerProvider(t.Context(), telemetry.Config{Traces: telemetry.TracesNone})
	require.NoError(t, err)
	_, s = tp.Tracer("test").Start(t.Context(), "x")
	require.False(t, s.SpanContext().IsSampled())
	require.NoError(t, tp.Shutdown(t.Context()))
}

func TestMetricsHandlerServesPrometheusText(t *testing.T) {
	mp, reg, err := telemetry.NewMeterProvider(t.Context(), telemetry.Config{ServiceName: "svc"})
	require.NoError(t, err)
	defer func() { _ = mp.Shutdown(context.Background()) }()
	c, err := mp.Meter("test").Int64Counter("sagaflow.test.things", metric.WithUnit("{thing}"))
	require.NoError(t, err)
	c.Add(t.Context(), 3)
	h, err := mp.Meter("test").Float64Histogram("sagaflow.test.duration", metric.WithUnit("s"))
	require.NoError(t, err)
	h.Record(t.Context(), 0.5)

	srv := httptest.NewServer(telemetry.MetricsHandler(reg))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	text := string(body)
	require.Contains(t, text, "\nsagaflow_test_things_total 3\n")
	require.Contains(t, text, "\nsagaflow_test_duration_seconds_count 1\n")
	require.Contains(t, text, `service_name="svc"`, "target_info carries the resource")
	require.True(t, strings.Contains(text, "go_goroutines"), "the Go runtime collector is registered")
}
