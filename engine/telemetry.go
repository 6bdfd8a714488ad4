package engine

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/sagaflow/sagaflow/internal/protocol"
	"github.com/sagaflow/sagaflow/internal/telemetry"
	"github.com/sagaflow/sagaflow/saga"
)

// A saga's trace (one per instance):
//
//	<definition>                      root span, from Start to the first finish
//	├── step <name>                   one per forward attempt, from its send to its reply or timeout
//	│   └── (participant's span)      the participant's processing, parented through traceparent
//	└── compensate <name>             one per compensation attempt, likewise
//
// Every span is recorded after the transaction that settles it commits, with its true start time,
// and with an id fixed in advance: the root's from the saga id, each attempt's from (saga, step,
// action, attempt) — the same id its command's traceparent names as the parent. So the tree is the
// same whichever replica sends a command and whichever applies its reply, before or after a
// restart. This needs a tracer provider built with TraceIDGenerator (internal/telemetry.Setup
// builds one); with another provider the engine warns once and the spans do not connect.

const instrumentationName = "github.com/sagaflow/sagaflow/engine"

// TraceIDGenerator returns the ID generator the engine's tracer provider must be built with
// (sdktrace.WithIDGenerator) for a saga's spans to form one tree; other spans get random ids.
func TraceIDGenerator() sdktrace.IDGenerator { return telemetry.NewIDGenerator() }

// instruments are the engine's tracer and metric instruments.
type instruments struct {
	tracer       trace.Tracer
	started      metric.Int64Counter
	finished     metric.Int64Counter
	stepDuration metric.Float64Histogram
	retries      metric.Int64Counter
	timeouts     metric.Int64Counter
	lateEffects  metric.Int64Counter
	inFlight     metric.Int64ObservableGauge
	warnIDs      sync.Once
}

// stepDurationBuckets (seconds) span a fast local step to a long timeout.
var stepDurationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300}

func newInstruments(tp trace.TracerProvider, mp metric.MeterProvider) (*instruments, error) {
	m := mp.Meter(instrumentationName)
	ins := &instruments{tracer: tp.Tracer(instrumentationName)}
	var err error
	mk := func(e error) {
		if err == nil && e != nil {
			err = e
		}
	}
	ins.started, _ = m.Int64Counter("sagaflow.sagas.started", metric.WithUnit("{saga}"),
		metric.WithDescription("Saga instances started, per definition."))
	ins.finished, _ = m.Int64Counter("sagaflow.sagas.finished", metric.WithUnit("{saga}"),
		metric.WithDescription("Saga instances finished, per definition and final status (completed, compensated, failed)."))
	h, e := m.Float64Histogram("sagaflow.step.duration", metric.WithUnit("s"),
		metric.WithDescription("Time from sending a step's command (or compensation) to its reply or timeout, per attempt."),
		metric.WithExplicitBucketBoundaries(stepDurationBuckets...))
	mk(e)
	ins.stepDuration = h
	ins.retries, _ = m.Int64Counter("sagaflow.step.retries", metric.WithUnit("{attempt}"),
		metric.WithDescription("Attempts of a step's command or compensation after the first."))
	ins.timeouts, _ = m.Int64Counter("sagaflow.step.timeouts", metric.WithUnit("{attempt}"),
		metric.WithDescription("Attempts that timed out waiting for their reply."))
	ins.lateEffects, _ = m.Int64Counter("sagaflow.late_effects", metric.WithUnit("{effect}"),
		metric.WithDescription("Late replies reporting an effect that nothing will undo (a success on a finished or compensating saga for a step that neither completed nor is compensated), per definition and step; each puts its saga in the operator's queue."))
	g, e := m.Int64ObservableGauge("sagaflow.sagas.in_flight", metric.WithUnit("{saga}"),
		metric.WithDescription("Saga instances running, compensating or failed (awaiting an operator), per definition; read from the database."))
	mk(e)
	ins.inFlight = g
	if err != nil {
		return nil, fmt.Errorf("engine metrics: %w", err)
	}
	return ins, nil
}

// observeInFlight registers the callback of the in-flight gauge; the caller unregisters it.
func (e *Engine) observeInFlight(mp metric.MeterProvider) (metric.Registration, error) {
	return mp.Meter(instrumentationName).RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		counts, err := e.store.countUnfinished(ctx, e.cfg.DB)
		if err != nil {
			return err
		}
		for _, c := range counts {
			o.ObserveInt64(e.ins.inFlight, c.N, metric.WithAttributes(
				attribute.String("definition", c.Definition), attribute.String("status", c.Status)))
		}
		return nil
	}, e.ins.inFlight)
}

// observation is what a committed transaction reports: an ended attempt, a start or a finish.
type observation struct {
	kind       obsKind
	r          *row // the row after the transaction
	def        *saga.Definition
	step       string
	service    string
	command    string
	attempt    int
	compensate bool
	outcome    string
	reason     string
	start, end time.Time
	reply      trace.SpanContext
}

type obsKind int

const (
	obsStarted obsKind = iota
	obsAttemptEnded
	obsRetry
	obsFinished
	obsLateEffect
)

// Outcomes of an attempt beyond the reply outcomes (success, failure, cancelled).
const (
	outcomeTimeout = "timeout"
	outcomeAborted = "aborted"
)

// observe notes what applying ev to r (which was prev) did, for telemetry after the commit.
func (t *tx) observe(def *saga.Definition, r *row, prev saga.Instance, ev saga.Event, meta eventMeta) {
	next := &r.inst
	if ev.Kind == saga.EventStart {
		t.obs = append(t.obs, observation{kind: obsStarted, r: r, def: def})
	}
	if prev.Phase == saga.PhaseAwaitingReply && prev.Step >= 0 && prev.Step < len(def.Steps) &&
		(next.Phase != saga.PhaseAwaitingReply || next.Step != prev.Step || next.Attempt != prev.Attempt || next.Status != prev.Status) {
		step := &def.Steps[prev.Step]
		o := observation{kind: obsAttemptEnded, r: r, def: def, step: step.Name, service: step.Service, command: step.Command,
			attempt: prev.Attempt, compensate: prev.Status == saga.StatusCompensating,
			start: prev.Deadline.Add(-step.Timeout), end: t.now, reply: meta.replySpan}
		if o.compensate {
			o.command = step.Compensation
		}
		switch ev.Kind {
		case saga.EventReply:
			o.outcome, o.reason = string(ev.Outcome), ev.Reason
		case saga.EventDeadline:
			o.outcome, o.reason = outcomeTimeout, fmt.Sprintf("no reply within %s", step.Timeout)
		default:
			o.outcome, o.reason = outcomeAborted, string(ev.Kind)+": "+ev.Reason
		}
		t.obs = append(t.obs, o)
	}
	if next.Status.Finished() && !prev.Status.Finished() {
		t.obs = append(t.obs, observation{kind: obsFinished, r: r, def: def, start: next.CreatedAt, end: t.now})
	}
}

// observeSend notes a command sent; attempts after the first are retries.
func (t *tx) observeSend(def *saga.Definition, r *row, a saga.Action) {
	if a.Attempt > 1 {
		t.obs = append(t.obs, observation{kind: obsRetry, r: r, def: def, step: a.Step, attempt: a.Attempt, compensate: a.Compensation})
	}
}

// report records the committed transaction's spans, metrics and logs.
func (t *tx) report(ctx context.Context) {
	e := t.e
	for i := range t.obs {
		o := &t.obs[i]
		defAttr := attribute.String("definition", o.def.Name)
		switch o.kind {
		case obsStarted:
			e.ins.started.Add(ctx, 1, metric.WithAttributes(defAttr))
			e.log.DebugContext(ctx, "saga started", instanceLog(o.r, "")...)
		case obsLateEffect:
			e.ins.lateEffects.Add(ctx, 1, metric.WithAttributes(defAttr, attribute.String("step", o.step)))
			e.log.ErrorContext(ctx, "late effect: saga needs attention", append(instanceLog(o.r, o.step),
				"attempt", o.attempt, "status", string(o.r.inst.Status), "reason", o.reason)...)
		case obsRetry:
			e.ins.retries.Add(ctx, 1, metric.WithAttributes(defAttr, attribute.String("step", o.step),
				attribute.String("action", actionName(o.compensate))))
		case obsAttemptEnded:
			attrs := metric.WithAttributes(defAttr, attribute.String("step", o.step),
				attribute.String("action", actionName(o.compensate)), attribute.String("outcome", o.outcome))
			e.ins.stepDuration.Record(ctx, o.end.Sub(o.start).Seconds(), attrs)
			if o.outcome == outcomeTimeout {
				e.ins.timeouts.Add(ctx, 1, metric.WithAttributes(defAttr, attribute.String("step", o.step),
					attribute.String("action", actionName(o.compensate))))
			}
			e.recordAttempt(ctx, o)
			if o.outcome != string(protocol.OutcomeSuccess) {
				e.log.InfoContext(ctx, "step attempt did not succeed", append(instanceLog(o.r, o.step),
					"action", actionName(o.compensate), "attempt", o.attempt, "outcome", o.outcome, "reason", o.reason)...)
			}
		case obsFinished:
			st := o.r.inst.Status
			e.ins.finished.Add(ctx, 1, metric.WithAttributes(defAttr, attribute.String("status", string(st))))
			if !redriven(&o.r.inst) {
				e.recordRoot(ctx, o)
			}
			level := slog.LevelInfo
			if st == saga.StatusFailed {
				level = slog.LevelWarn
			}
			args := append(instanceLog(o.r, ""), "status", string(st))
			if st != saga.StatusCompleted {
				args = append(args, "last_error", o.r.inst.LastError)
			}
			e.log.Log(ctx, level, "saga finished", args...)
		}
	}
}

// instanceLog returns the log attributes every line about an instance carries.
func instanceLog(r *row, step string) []any {
	if step == "" && r.inst.Step >= 0 && r.inst.Step < len(r.inst.Steps) {
		step = r.inst.Steps[r.inst.Step].Name
	}
	return []any{"saga_id", r.inst.ID, "definition", r.inst.Definition, "step", step, "trace_id", r.traceID}
}

// redriven reports whether in was redriven (a compensation or a halted forward step): its root
// span was recorded at its first finish.
func redriven(in *saga.Instance) bool {
	for i := range in.Steps {
		if in.Steps[i].CompensationBase > 0 || in.Steps[i].AttemptBase > 0 {
			return true
		}
	}
	return false
}

// rootSpanID is the span id of the saga's root span.
func rootSpanID(sagaID string) trace.SpanID { return telemetry.DerivedSpanID(sagaID, "saga") }

// attemptSpanID is the span id of an attempt's span, the parent its command names.
func attemptSpanID(sagaID, step, action string, attempt int) trace.SpanID {
	return telemetry.DerivedSpanID(sagaID, step, action, fmt.Sprint(attempt))
}

// rootContext returns the saga's root span context (remote: it is recorded elsewhere or later).
func (r *row) rootContext() trace.SpanContext {
	tid, err := trace.TraceIDFromHex(r.traceID)
	if err != nil {
		return trace.SpanContext{}
	}
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: rootSpanID(r.inst.ID),
		TraceFlags: trace.TraceFlags(r.traceFlags), Remote: true})
}

// commandTraceparent is the traceparent header of a command: the attempt's span under the root.
func (r *row) commandTraceparent(step, action string, attempt int) string {
	root := r.rootContext()
	if !root.IsValid() {
		return ""
	}
	return fmt.Sprintf("00-%s-%s-%s", root.TraceID(), attemptSpanID(r.inst.ID, step, action, attempt), root.TraceFlags())
}

// sampleRoot decides at start whether the saga's trace is sampled, by starting (and dropping) its
// root span with the ids it will have: the provider's sampler decides as it will at the finish.
// Without a tracing SDK every trace counts as sampled, so participants decide for themselves.
func (e *Engine) sampleRoot(ctx context.Context, r *row, sagaID string, def *saga.Definition) {
	r.traceFlags = byte(trace.FlagsSampled)
	tid, err := trace.TraceIDFromHex(r.traceID)
	if err != nil {
		return
	}
	want := rootSpanID(sagaID)
	_, sp := e.ins.tracer.Start(telemetry.WithIDs(trace.ContextWithSpanContext(ctx, trace.SpanContext{}), tid, want),
		def.Name, trace.WithNewRoot())
	sc := sp.SpanContext() // the probe is never ended: the real root span is recorded at the finish
	if !sc.IsValid() {
		return
	}
	if sc.SpanID() != want {
		e.ins.warnIDs.Do(func() {
			e.log.Warn("the engine's tracer provider is not built with engine.TraceIDGenerator: a saga's spans will not form one tree")
		})
	}
	r.traceFlags = byte(sc.TraceFlags())
}

// recordRoot records the saga's root span, from its start to now.
func (e *Engine) recordRoot(ctx context.Context, o *observation) {
	root := o.r.rootContext()
	if !root.IsSampled() {
		return
	}
	in := &o.r.inst
	ctx = telemetry.WithIDs(trace.ContextWithSpanContext(ctx, trace.SpanContext{}), root.TraceID(), root.SpanID())
	_, sp := e.ins.tracer.Start(ctx, o.def.Name, trace.WithNewRoot(), trace.WithTimestamp(o.start),
		trace.WithSpanKind(trace.SpanKindInternal), trace.WithAttributes(
			telemetry.SagaIDKey.String(in.ID), telemetry.DefinitionKey.String(in.Definition),
			telemetry.VersionKey.Int(in.Version), telemetry.BusinessKeyKey.String(in.BusinessKey),
			telemetry.StatusKey.String(string(in.Status))))
	if in.Status != saga.StatusCompleted {
		sp.SetStatus(codes.Error, string(in.Status)+": "+in.LastError)
	}
	sp.End(trace.WithTimestamp(o.end))
}

// recordAttempt records an attempt's span under the root, from its send to now, linked to the
// reply that ended it.
func (e *Engine) recordAttempt(ctx context.Context, o *observation) {
	root := o.r.rootContext()
	if !root.IsSampled() {
		return
	}
	in := &o.r.inst
	action := actionName(o.compensate)
	name := "step " + o.step
	if o.compensate {
		name = "compensate " + o.step
	}
	subject := e.ns().Subject(protocol.CommandSubject(o.service, o.command))
	attrs := append(telemetry.SendAttributes(subject, commandID(in.ID, o.step, action, o.attempt)),
		telemetry.SagaIDKey.String(in.ID), telemetry.DefinitionKey.String(in.Definition),
		telemetry.BusinessKeyKey.String(in.BusinessKey), telemetry.StepKey.String(o.step),
		telemetry.AttemptKey.Int(o.attempt), telemetry.ActionKey.String(action),
		telemetry.ServiceKey.String(o.service), telemetry.CommandKey.String(o.command),
		telemetry.OutcomeKey.String(o.outcome))
	opts := []trace.SpanStartOption{trace.WithTimestamp(o.start), trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attrs...)}
	if o.reply.IsValid() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: o.reply}))
	}
	ctx = telemetry.WithIDs(trace.ContextWithRemoteSpanContext(ctx, root), root.TraceID(), attemptSpanID(in.ID, o.step, action, o.attempt))
	_, sp := e.ins.tracer.Start(ctx, name, opts...)
	if o.outcome != string(protocol.OutcomeSuccess) {
		sp.SetStatus(codes.Error, o.outcome+": "+o.reason)
	}
	sp.End(trace.WithTimestamp(o.end))
}
