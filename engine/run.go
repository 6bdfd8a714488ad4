package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"golang.org/x/sync/errgroup"

	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/protocol"
	"github.com/sagaflow/sagaflow/internal/sqldb"
	"github.com/sagaflow/sagaflow/saga"
)

// Run consumes replies and trigger events and fires deadlines until ctx is done, then stops taking
// new work, finishes the transactions in flight (within Config.ShutdownTimeout) and returns nil.
// It returns an error when it cannot start (no JetStream, a consumer it cannot create) or when a
// component fails for good.
//
// Replies come from one durable consumer (Config.ReplyConsumer) on the SAGA_REPLIES stream, shared
// by every replica; each trigger has a durable consumer on EVENTS named
// "sagaflow-trigger-<definition>". A malformed message goes to the dead-letter stream at once, one
// that keeps failing after Config.MaxDeliver deliveries too.
func (e *Engine) Run(ctx context.Context) error {
	if e.cfg.JetStream == nil {
		return errors.New("engine run: Config.JetStream is required")
	}
	bus.RememberNamespace(e.cfg.JetStream, e.ns())
	dlq, err := bus.NewPublisher(e.cfg.JetStream, bus.PublisherConfig{Logger: e.log, MeterProvider: e.cfg.MeterProvider})
	if err != nil {
		return fmt.Errorf("engine run: dead-letter publisher: %w", err)
	}
	defer dlq.Close()
	reg, err := e.observeInFlight(e.cfg.MeterProvider)
	if err != nil {
		return fmt.Errorf("engine run: in-flight gauge: %w", err)
	}
	defer func() { _ = reg.Unregister() }()

	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: e.cfg.ShutdownTimeout}, watermill.NewSlogLogger(e.log.With("component", "engine.router")))
	if err != nil {
		return fmt.Errorf("engine run: router: %w", err)
	}
	router.AddMiddleware(bus.DeadLetter(dlq, e.ns(), e.cfg.MaxDeliver, bus.DeadLetterCounter(e.cfg.MeterProvider, e.log, e.cfg.ReplyConsumer, protocol.LogAttrs)))

	replies, err := bus.NewConsumer(e.cfg.JetStream, bus.ConsumerConfig{
		Stream:          e.ns().Stream(bus.StreamReplies),
		Durable:         e.ns().Durable(e.cfg.ReplyConsumer),
		FilterSubjects:  []string{e.ns().Subject(protocol.ReplyPrefix + ">")},
		Namespace:       e.ns(),
		Batch:           e.cfg.ReplyBatch,
		MaxDeliver:      e.cfg.MaxDeliver,
		ShutdownTimeout: e.cfg.ShutdownTimeout,
		Logger:          e.log,
		MeterProvider:   e.cfg.MeterProvider,
		LogAttrs:        protocol.LogAttrs,
	})
	if err != nil {
		return fmt.Errorf("engine run: replies consumer: %w", err)
	}

	for _, def := range e.triggers() {
		sub, err := bus.NewSubscriber(e.cfg.JetStream, bus.SubscriberConfig{
			Stream:         e.ns().Stream(bus.StreamEvents),
			Durable:        e.ns().Durable("sagaflow-trigger-" + def.Name),
			FilterSubjects: []string{e.ns().Subject(def.Trigger.Subject)},
			MaxDeliver:     e.cfg.MaxDeliver,
			NakDelay:       e.cfg.NakDelay,
			Logger:         e.log,
			MeterProvider:  e.cfg.MeterProvider,
		})
		if err != nil {
			return fmt.Errorf("engine run: trigger subscriber of %s: %w", def.Name, err)
		}
		defer sub.Close()
		router.AddConsumerHandler("sagaflow-trigger-"+def.Name, e.ns().Subject(def.Trigger.Subject), sub, e.triggerHandler(def.Name, *def.Trigger))
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := replies.Run(gctx, e.handleReplies); err != nil {
			return fmt.Errorf("engine replies: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := router.Run(gctx); err != nil {
			return fmt.Errorf("engine router: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		return router.Close()
	})
	g.Go(func() error { return e.runTimers(gctx) })
	g.Go(func() error { return e.runRetention(gctx) })
	if e.cfg.ListenDSN != "" && sqldb.DialectOf(e.cfg.DB) == sqldb.Postgres {
		g.Go(func() error { return listenTimers(gctx, e.cfg.ListenDSN, e.timers.poke) })
	}
	e.log.InfoContext(ctx, "engine running", "reply_consumer", e.cfg.ReplyConsumer, "triggers", len(e.triggers()))
	err = g.Wait()
	e.log.InfoContext(ctx, "engine stopped")
	if ctx.Err() != nil {
		return nil
	}
	if err == nil {
		return errors.New("engine stopped before its context was done")
	}
	return err
}

// triggers returns the latest version of each definition that has a trigger.
func (e *Engine) triggers() []*saga.Definition {
	var out []*saga.Definition
	for _, d := range e.cfg.Definitions.List() { // sorted by name, then version
		if n := len(out); n > 0 && out[n-1].Name == d.Name {
			out = out[:n-1]
		}
		out = append(out, d)
	}
	return slices.DeleteFunc(out, func(d *saga.Definition) bool { return d.Trigger == nil })
}

// triggerHandler starts an instance of definition for each event: the business key is the event's
// field trigger.Key, the input the whole payload, and the idempotency key the event's message id,
// so a redelivered event starts one instance.
func (e *Engine) triggerHandler(definition string, trigger saga.Trigger) message.NoPublishHandlerFunc {
	return func(msg *message.Message) error {
		key, err := businessKey(msg.Payload, trigger.Key)
		if err != nil {
			return fmt.Errorf("%w: event %s on %s: %w", bus.ErrPermanent, msg.UUID, trigger.Subject, err)
		}
		msgID := msg.UUID
		if id := msg.Metadata.Get(protocol.HeaderMsgID); id != "" {
			msgID = id
		}
		_, err = e.Start(msg.Context(), definition, key, json.RawMessage(msg.Payload), StartOptions{
			IdempotencyKey: msgID,
			Actor:          "trigger " + trigger.Subject,
		})
		if errors.Is(err, ErrInvalidInput) {
			return fmt.Errorf("%w: %w", bus.ErrPermanent, err)
		}
		return err
	}
}

// businessKey extracts the value at path from a JSON object payload: a string as is, a number as
// written. path is a field name or a dotted path into nested objects ("output.flight_ref" reads
// payload["output"]["flight_ref"]); a field whose own name is the whole path is taken first.
func businessKey(payload []byte, path string) (string, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(payload, &obj); err != nil {
		return "", fmt.Errorf("payload is not a JSON object: %w", ErrInvalidInput)
	}
	raw, ok := obj[path]
	if !ok {
		raw, ok = lookupPath(obj, path)
	}
	if !ok || string(raw) == "null" {
		return "", fmt.Errorf("payload has no field %q for the business key: %w", path, ErrInvalidInput)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		if s == "" {
			return "", fmt.Errorf("payload field %q is empty: %w", path, ErrInvalidInput)
		}
		return s, nil
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err == nil {
		if _, err := strconv.ParseFloat(n.String(), 64); err == nil {
			return n.String(), nil
		}
	}
	return "", fmt.Errorf("payload field %q is %s, want a string or a number: %w", path, raw, ErrInvalidInput)
}

// lookupPath follows the dotted path through nested JSON objects and reports whether it exists.
func lookupPath(obj map[string]json.RawMessage, path string) (json.RawMessage, bool) {
	names := strings.Split(path, ".")
	for i, name := range names {
		raw, ok := obj[name]
		if !ok {
			return nil, false
		}
		if i == len(names)-1 {
			return raw, true
		}
		obj = nil
		if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
			return nil, false
		}
	}
	return nil, false
}
