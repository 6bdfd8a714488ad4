package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/exporters/autoexport"
	promexporter "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// Trace export modes of Config.Traces.
const (
	// TracesAuto exports over OTLP when the environment configures it (OTEL_TRACES_EXPORTER, or an
	// OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), and nowhere otherwise.
	TracesAuto = "auto"
	// TracesOTLP exports over OTLP as the OTEL_EXPORTER_OTLP_* variables say (protocol, endpoint,
	// headers); OTEL_TRACES_EXPORTER may still choose otherwise.
	TracesOTLP = "otlp"
	// TracesStdout writes each span as one JSON object per line to Config.TraceWriter.
	TracesStdout = "stdout"
	// TracesNone exports nothing; trace ids are still made and carried.
	TracesNone = "none"
)

// Config says how Setup builds the providers.
type Config struct {
	// ServiceName is service.name unless OTEL_SERVICE_NAME (or OTEL_RESOURCE_ATTRIBUTES) says otherwise.
	ServiceName string
	// ServiceVersion is service.version.
	ServiceVersion string
	// Traces is the export mode: TracesAuto (the default), TracesOTLP, TracesStdout or TracesNone.
	Traces string
	// TraceWriter receives the spans in TracesStdout mode; nil means os.Stderr.
	TraceWriter io.Writer
}

// Providers are a process's tracer and meter providers, and the Prometheus registry the meter
// provider's metrics are read through.
type Providers struct {
	Tracer   *sdktrace.TracerProvider
	Meter    *sdkmetric.MeterProvider
	Registry *prometheus.Registry
}

// Setup builds both providers for cfg (NewTracerProvider and NewMeterProvider). Call Shutdown to
// flush.
func Setup(ctx context.Context, cfg Config) (*Providers, error) {
	tp, err := NewTracerProvider(ctx, cfg)
	if err != nil {
		return nil, err
	}
	mp, reg, err := NewMeterProvider(ctx, cfg)
	if err != nil {
		_ = tp.Shutdown(ctx)
		return nil, err
	}
	return &Providers{Tracer: tp, Meter: mp, Registry: reg}, nil
}

// Resource describes the process: service.name and service.version from cfg unless
// OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES say otherwise, plus the SDK, host and process id.
func Resource(ctx context.Context, cfg Config) (*resource.Resource, error) {
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName(cfg.ServiceName), semconv.ServiceVersion(cfg.ServiceVersion)),
		resource.WithFromEnv(), // after: the environment wins
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithProcessPID(),
	)
	if err != nil && res == nil {
		return nil, fmt.Errorf("telemetry resource: %w", err)
	}
	return res, nil // a partial resource (one detector failed) is still worth using
}

// NewTracerProvider returns a tracer provider exporting as cfg.Traces says. Sampling follows
// OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG (the SDK reads them; the default samples every
// trace). It uses NewIDGenerator, so an engine may use it.
func NewTracerProvider(ctx context.Context, cfg Config) (*sdktrace.TracerProvider, error) {
	res, err := Resource(ctx, cfg)
	if err != nil {
		return nil, err
	}
	exp, err := spanExporter(ctx, cfg)
	if err != nil {
		return nil, err
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res), sdktrace.WithIDGenerator(NewIDGenerator())}
	if exp != nil {
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	return sdktrace.NewTracerProvider(opts...), nil
}

// NewMeterProvider returns a meter provider read by a Prometheus exporter into a new registry
// (which also holds the Go runtime and process collectors); serve it with MetricsHandler.
func NewMeterProvider(ctx context.Context, cfg Config) (*sdkmetric.MeterProvider, *prometheus.Registry, error) {
	res, err := Resource(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reader, err := promexporter.New(promexporter.WithRegisterer(reg), promexporter.WithoutScopeInfo())
	if err != nil {
		return nil, nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	return sdkmetric.NewMeterProvider(sdkmetric.WithResource(res), sdkmetric.WithReader(reader)), reg, nil
}

func spanExporter(ctx context.Context, cfg Config) (sdktrace.SpanExporter, error) {
	mode := cfg.Traces
	if mode == "" || mode == TracesAuto {
		mode = TracesNone
		if os.Getenv("OTEL_TRACES_EXPORTER") != "" || os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" ||
			os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" {
			mode = TracesOTLP
		}
	}
	switch mode {
	case TracesNone:
		return nil, nil
	case TracesStdout:
		w := cfg.TraceWriter
		if w == nil {
			w = os.Stderr
		}
		exp, err := stdouttrace.New(stdouttrace.WithWriter(w))
		if err != nil {
			return nil, fmt.Errorf("stdout trace exporter: %w", err)
		}
		return exp, nil
	case TracesOTLP:
		exp, err := autoexport.NewSpanExporter(ctx)
		if err != nil {
			return nil, fmt.Errorf("OTLP trace exporter (OTEL_EXPORTER_OTLP_*): %w", err)
		}
		return exp, nil
	}
	return nil, fmt.Errorf("trace export %q: want %s", cfg.Traces, strings.Join(TraceModes, ", "))
}

// TraceModes lists the values of Config.Traces.
var TraceModes = []string{TracesAuto, TracesOTLP, TracesStdout, TracesNone}

// MetricsHandler serves reg's metrics in the Prometheus text format.
func MetricsHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Shutdown flushes and stops both providers.
func (p *Providers) Shutdown(ctx context.Context) error {
	return errors.Join(p.Tracer.Shutdown(ctx), p.Meter.Shutdown(ctx))
}
