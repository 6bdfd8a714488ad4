// Package protocol is the wire contract between the orchestrator and saga participants: the
// subjects, the headers and the payloads of commands and replies. It is written down in the README
// ("The message contract") so that a participant in any language can be built from it with a plain
// NATS client; this package is its one Go implementation, shared by engine and participant.
//
// Every message is a Watermill message whose UUID is the message id (sent as Nats-Msg-Id
// "<subject>:<message id>", bus.MsgID, so JetStream drops a re-publish to the same subject inside
// its duplicate window; the bus's subscriber strips the prefix again) and whose metadata are the
// NATS headers, kept verbatim (header names are case-sensitive).
package protocol

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Subjects. The prefix "saga" can be changed for multi-tenant clusters; these are the defaults.
const (
	// CommandPrefix starts every command subject: saga.cmd.<service>.<command>.
	CommandPrefix = "saga.cmd."
	// ReplyPrefix starts every reply subject: saga.reply.<definition>.
	ReplyPrefix = "saga.reply."
)

// LogAttrs returns the log attributes of a message's saga headers (saga_id, definition, step), for
// logs of components that handle messages without parsing them (bus.DeadLetterCounter).
func LogAttrs(md message.Metadata) []any {
	return []any{"saga_id", md.Get(HeaderSagaID), "definition", md.Get(HeaderDefinition), "step", md.Get(HeaderStep)}
}

// CommandSubject returns the subject of a command for service.
func CommandSubject(service, command string) string {
	return CommandPrefix + service + "." + command
}

// ReplySubject returns the subject replies of a definition's sagas are sent to.
func ReplySubject(definition string) string { return ReplyPrefix + definition }

// ServiceCommands returns the filter subject matching every command for service.
func ServiceCommands(service string) string { return CommandPrefix + service + ".>" }

// Header names. Sagaflow's own headers start with "Sagaflow-"; the W3C trace context and the
// CloudEvents attributes use their standard names.
const (
	HeaderMsgID       = "Nats-Msg-Id"
	HeaderSagaID      = "Sagaflow-Saga-Id"
	HeaderDefinition  = "Sagaflow-Definition"
	HeaderVersion     = "Sagaflow-Definition-Version"
	HeaderBusinessKey = "Sagaflow-Business-Key"
	HeaderStep        = "Sagaflow-Step"
	HeaderAttempt     = "Sagaflow-Attempt"
	// HeaderGeneration is the step's retry generation on a command: absent (0) until an operator
	// retries the step after a failure reply. A participant keys its barrier on (saga, step,
	// generation, action), so the retry runs the handler again instead of replaying the failure.
	HeaderGeneration    = "Sagaflow-Step-Generation"
	HeaderAction        = "Sagaflow-Action"
	HeaderReplyTo       = "Sagaflow-Reply-To"
	HeaderOutcome       = "Sagaflow-Outcome"
	HeaderTraceparent   = "traceparent"
	HeaderTracestate    = "tracestate"
	HeaderCESpecVersion = "ce-specversion"
	HeaderCEID          = "ce-id"
	HeaderCEType        = "ce-type"
	HeaderCESource      = "ce-source"
	HeaderCETime        = "ce-time"
	HeaderContentType   = "content-type"
)

// Action says whether a command does a step or undoes it.
type Action string

const (
	// ActionForward runs a step's command.
	ActionForward Action = "forward"
	// ActionCompensate runs a step's compensation.
	ActionCompensate Action = "compensate"
)

// Outcome is a participant's answer.
type Outcome string

const (
	// OutcomeSuccess: the action applied (or, for a compensation, is undone); Output is merged into
	// the saga's data under the step's name.
	OutcomeSuccess Outcome = "success"
	// OutcomeFailure: a business failure; the forward action did not apply and is not retried.
	OutcomeFailure Outcome = "failure"
	// OutcomeCancelled: the participant refused a forward command because the step was already
	// compensated there (a command that arrived after its compensation).
	OutcomeCancelled Outcome = "cancelled"
	// OutcomeRetrying: news, not an answer — the participant could not apply the attempt this
	// time (Reason says why: its handler's transient error, or a refusal to the dead-letter
	// stream). The orchestrator records it as the step's last error and keeps waiting.
	OutcomeRetrying Outcome = "retrying"
)

// Command is a command or compensation sent to a participant.
type Command struct {
	// MessageID is unique per send; a retry is a new message with a new id.
	MessageID   string
	SagaID      string
	Definition  string
	Version     int
	BusinessKey string
	Step        string
	Attempt     int
	// Generation is the step's retry generation (HeaderGeneration); 0 when the header is absent.
	Generation int
	Action     Action
	Service    string
	// Name is the command (or compensation command) name, the last subject token.
	Name string
	// ReplyTo is the subject the reply must be published to.
	ReplyTo string
	// Payload is the saga's data: {"input": ..., "steps": {...}}.
	Payload json.RawMessage
	// Time is when the command was created.
	Time time.Time
}

// Subject returns the subject the command is published to.
func (c *Command) Subject() string { return CommandSubject(c.Service, c.Name) }

// Message encodes c as a Watermill message.
func (c *Command) Message() *message.Message {
	m := message.NewMessage(c.MessageID, message.Payload(c.Payload))
	md := m.Metadata
	md.Set(HeaderSagaID, c.SagaID)
	md.Set(HeaderDefinition, c.Definition)
	md.Set(HeaderVersion, strconv.Itoa(c.Version))
	if c.BusinessKey != "" {
		md.Set(HeaderBusinessKey, c.BusinessKey)
	}
	md.Set(HeaderStep, c.Step)
	md.Set(HeaderAttempt, strconv.Itoa(c.Attempt))
	if c.Generation > 0 {
		md.Set(HeaderGeneration, strconv.Itoa(c.Generation))
	}
	md.Set(HeaderAction, string(c.Action))
	md.Set(HeaderReplyTo, c.ReplyTo)
	setCloudEvents(md, c.MessageID, "sagaflow.command."+c.Name, "sagaflow/orchestrator/"+c.Definition, c.Time)
	return m
}

// Reply is a participant's answer to a Command.
type Reply struct {
	MessageID  string
	SagaID     string
	Definition string
	// Version is the definition version copied from the command; 0 when the reply has no
	// Sagaflow-Definition-Version header (participants written before it was part of the contract).
	Version int
	Step    string
	Attempt int
	Action  Action
	Outcome Outcome
	// Output is the step's result on success (any JSON; null when none).
	Output json.RawMessage
	// Reason explains a failure or a refusal.
	Reason string
	// Service is the participant that answered, for ce-source.
	Service string
	Time    time.Time
}

// replyBody is the JSON payload of a reply.
type replyBody struct {
	Output json.RawMessage `json:"output,omitempty"`
	Reason string          `json:"reason,omitempty"`
}

// Answer builds the reply to c with the given outcome; the caller sets MessageID, Output, Reason.
func (c *Command) Answer(outcome Outcome) Reply {
	return Reply{
		SagaID:     c.SagaID,
		Definition: c.Definition,
		Version:    c.Version,
		Step:       c.Step,
		Attempt:    c.Attempt,
		Action:     c.Action,
		Outcome:    outcome,
		Service:    c.Service,
	}
}

// Message encodes r as a Watermill message.
func (r *Reply) Message() (*message.Message, error) {
	body, err := json.Marshal(replyBody{Output: r.Output, Reason: r.Reason})
	if err != nil {
		return nil, fmt.Errorf("encode reply: %w", err)
	}
	m := message.NewMessage(r.MessageID, body)
	md := m.Metadata
	md.Set(HeaderSagaID, r.SagaID)
	md.Set(HeaderDefinition, r.Definition)
	if r.Version > 0 {
		md.Set(HeaderVersion, strconv.Itoa(r.Version))
	}
	md.Set(HeaderStep, r.Step)
	md.Set(HeaderAttempt, strconv.Itoa(r.Attempt))
	md.Set(HeaderAction, string(r.Action))
	md.Set(HeaderOutcome, string(r.Outcome))
	setCloudEvents(md, r.MessageID, "sagaflow.reply."+string(r.Outcome), "sagaflow/participant/"+r.Service, r.Time)
	return m, nil
}

func setCloudEvents(md message.Metadata, id, typ, source string, t time.Time) {
	md.Set(HeaderCESpecVersion, "1.0")
	md.Set(HeaderCEID, id)
	md.Set(HeaderCEType, typ)
	md.Set(HeaderCESource, source)
	if !t.IsZero() {
		md.Set(HeaderCETime, t.UTC().Format(time.RFC3339Nano))
	}
	md.Set(HeaderContentType, "application/json")
}

// ErrMalformed is returned for a message that does not follow the contract; such a message goes to
// the dead-letter stream with the error as its reason.
var ErrMalformed = errors.New("malformed message")

// ParseCommand decodes a command received on subject.
func ParseCommand(subject string, m *message.Message) (Command, error) {
	var errs []error
	md := m.Metadata
	c := Command{
		MessageID:   m.UUID,
		SagaID:      md.Get(HeaderSagaID),
		Definition:  md.Get(HeaderDefinition),
		BusinessKey: md.Get(HeaderBusinessKey),
		Step:        md.Get(HeaderStep),
		Action:      Action(md.Get(HeaderAction)),
		ReplyTo:     md.Get(HeaderReplyTo),
		Payload:     json.RawMessage(m.Payload),
	}
	if id := md.Get(HeaderMsgID); id != "" {
		c.MessageID = id
	}
	rest, ok := strings.CutPrefix(subject, CommandPrefix)
	service, name, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || service == "" || name == "" || strings.Contains(name, ".") {
		errs = append(errs, fmt.Errorf("subject %q is not %s<service>.<command>", subject, CommandPrefix))
	}
	c.Service, c.Name = service, name
	c.Version, _ = strconv.Atoi(md.Get(HeaderVersion))
	errs = append(errs, require(HeaderSagaID, c.SagaID), require(HeaderStep, c.Step), require(HeaderReplyTo, c.ReplyTo))
	c.Attempt, errs = attempt(md, errs)
	if g := md.Get(HeaderGeneration); g != "" {
		n, err := strconv.Atoi(g)
		if err != nil || n < 0 {
			errs = append(errs, fmt.Errorf("header %s is %q, want an integer >= 0", HeaderGeneration, g))
		}
		c.Generation = n
	}
	if c.Action != ActionForward && c.Action != ActionCompensate {
		errs = append(errs, fmt.Errorf("header %s is %q, want forward or compensate", HeaderAction, c.Action))
	}
	if len(c.Payload) > 0 && !json.Valid(c.Payload) {
		errs = append(errs, errors.New("payload is not JSON"))
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return c, nil
}

// ParseReply decodes a reply.
func ParseReply(m *message.Message) (Reply, error) {
	var errs []error
	md := m.Metadata
	r := Reply{
		MessageID:  m.UUID,
		SagaID:     md.Get(HeaderSagaID),
		Definition: md.Get(HeaderDefinition),
		Step:       md.Get(HeaderStep),
		Action:     Action(md.Get(HeaderAction)),
		Outcome:    Outcome(md.Get(HeaderOutcome)),
	}
	if id := md.Get(HeaderMsgID); id != "" {
		r.MessageID = id
	}
	errs = append(errs, require(HeaderSagaID, r.SagaID), require(HeaderDefinition, r.Definition), require(HeaderStep, r.Step))
	if v := md.Get(HeaderVersion); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			errs = append(errs, fmt.Errorf("header %s is %q, want an integer >= 1", HeaderVersion, v))
		}
		r.Version = n
	}
	r.Attempt, errs = attempt(md, errs)
	if r.Action != ActionForward && r.Action != ActionCompensate {
		errs = append(errs, fmt.Errorf("header %s is %q, want forward or compensate", HeaderAction, r.Action))
	}
	switch r.Outcome {
	case OutcomeSuccess, OutcomeFailure, OutcomeCancelled, OutcomeRetrying:
	default:
		errs = append(errs, fmt.Errorf("header %s is %q, want success, failure, cancelled or retrying", HeaderOutcome, r.Outcome))
	}
	if len(m.Payload) > 0 {
		var b replyBody
		if err := json.Unmarshal(m.Payload, &b); err != nil {
			errs = append(errs, fmt.Errorf("payload is not a reply object {\"output\":…,\"reason\":…}: %w", err))
		}
		r.Output, r.Reason = b.Output, b.Reason
	}
	if err := errors.Join(errs...); err != nil {
		return r, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return r, nil
}

func require(header, v string) error {
	if v == "" {
		return fmt.Errorf("header %s is missing", header)
	}
	return nil
}

func attempt(md message.Metadata, errs []error) (int, []error) {
	n, err := strconv.Atoi(md.Get(HeaderAttempt))
	if err != nil || n < 1 {
		return 0, append(errs, fmt.Errorf("header %s is %q, want an integer >= 1", HeaderAttempt, md.Get(HeaderAttempt)))
	}
	return n, errs
}
