// Package telemetry is Sagaflow's OpenTelemetry glue: the W3C trace-context propagation over
// message headers, the span attributes of the messaging semantic conventions, the ID generator
// that lets the engine record a saga's spans with ids fixed in advance, and the set-up of tracer
// and meter providers from the standard OTEL_* environment variables, with metrics exposed for
// Prometheus.
//
// Why hand-written: Watermill has no OpenTelemetry integration of its own, and the third-party
// ones are not obtainable through the module proxy (and either do not inject W3C headers or use
// their own keys). What is here is small: the propagator works directly on message metadata,
// which is a map[string]string like propagation.MapCarrier.
package telemetry
