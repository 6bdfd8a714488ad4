package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel/trace"

	"github.com/sagaflow/sagaflow/internal/server"
	"github.com/sagaflow/sagaflow/internal/telemetry"
)

// traceFlags are the tracing flags of serve and dev.
type traceFlags struct {
	mode string
	file string
}

func (f *traceFlags) register(c *cobra.Command, def string, withFile bool) {
	c.Flags().StringVar(&f.mode, "trace", def, "where spans go: "+strings.Join(telemetry.TraceModes, ", ")+
		" (auto: OTLP when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_TRACES_EXPORTER is set; stdout: one JSON object per span)")
	if withFile {
		c.Flags().StringVar(&f.file, "trace-file", "", "with --trace stdout: write the spans to this file instead of stderr")
	}
}

func (f *traceFlags) check() error {
	var errs []error
	if !slices.Contains(telemetry.TraceModes, f.mode) {
		errs = append(errs, fmt.Errorf("--trace %q: want one of %s", f.mode, strings.Join(telemetry.TraceModes, ", ")))
	}
	if f.file != "" && f.mode != telemetry.TracesStdout {
		errs = append(errs, errors.New("--trace-file needs --trace stdout"))
	}
	return errors.Join(errs...)
}

// observability is a process's telemetry: a tracer provider per service it runs (each reports its
// own service.name), one meter provider, and the /metrics handler.
type observability struct {
	ctx     context.Context
	flags   traceFlags
	writer  io.Writer
	closeW  func() error
	meter   *telemetry.Providers // Tracer: the process's own service
	mu      sync.Mutex
	tracers map[string]trace.TracerProvider
	log     *slog.Logger
}

// newObservability sets telemetry up for a process whose own service name is service.
func newObservability(ctx context.Context, service string, f traceFlags, stderr io.Writer, log *slog.Logger) (*observability, error) {
	o := &observability{ctx: ctx, flags: f, writer: stderr, closeW: func() error { return nil }, tracers: map[string]trace.TracerProvider{}, log: log}
	if f.file != "" {
		file, err := os.Create(f.file)
		if err != nil {
			return nil, fmt.Errorf("--trace-file: %w", err)
		}
		o.writer, o.closeW = file, file.Close
	}
	// Several providers may export to one writer; each span is one Write, serialised here.
	o.writer = &lockedWriter{w: o.writer}
	p, err := telemetry.Setup(ctx, telemetry.Config{ServiceName: service, ServiceVersion: versionNumber(), Traces: f.mode, TraceWriter: o.writer})
	if err != nil {
		_ = o.closeW()
		return nil, err
	}
	o.meter = p
	o.tracers[service] = p.Tracer
	return o, nil
}

// tracerProvider returns the tracer provider of service, made on first use.
func (o *observability) tracerProvider(service string) trace.TracerProvider {
	o.mu.Lock()
	defer o.mu.Unlock()
	if tp, ok := o.tracers[service]; ok {
		return tp
	}
	tp, err := telemetry.NewTracerProvider(o.ctx, telemetry.Config{ServiceName: service, ServiceVersion: versionNumber(), Traces: o.flags.mode, TraceWriter: o.writer})
	if err != nil { // the same settings already worked for the first provider
		o.log.Error("tracer provider", "service", service, "err", err)
		return o.meter.Tracer
	}
	o.tracers[service] = tp
	return tp
}

// shutdown flushes every provider.
func (o *observability) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var errs []error
	for service, tp := range o.tracers {
		if sdk, ok := tp.(interface{ Shutdown(context.Context) error }); ok && tp != trace.TracerProvider(o.meter.Tracer) {
			if err := sdk.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", service, err))
			}
		}
	}
	errs = append(errs, o.meter.Shutdown(ctx), o.closeW())
	if err := errors.Join(errs...); err != nil {
		o.log.Warn("telemetry shutdown", "err", err)
	}
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// serveMetrics serves /metrics on addr (for processes without the API), and health, when not nil,
// for every other path (/healthz and /readyz), until stop is called.
func serveMetrics(ctx context.Context, addr string, o *observability, health http.Handler) (stop func(), err error) {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", telemetry.MetricsHandler(o.meter.Registry))
	if health != nil {
		mux.Handle("/", health)
	}
	srv := server.NewHTTPServer(mux, server.HTTPLimits{})
	go func() { _ = srv.Serve(ln) }()
	return func() { _ = srv.Close() }, nil
}
