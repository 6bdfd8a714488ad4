// Package definitions turns workflow definitions, written in YAML (or JSON) or built in Go, into
// validated saga.Definition values that the engine runs, and keeps the versions of every known
// definition in a Registry.
//
// # The format
//
// A definition file holds one YAML document:
//
//	name: order-fulfilment          # [a-z0-9-], 1..64, no leading or trailing dash
//	version: 1                      # integer >= 1; name+version is unique
//	description: Reserve stock, take payment, ship.
//	trigger:                        # optional: start an instance on a domain event
//	  subject: events.order.placed  # a concrete NATS subject under events. (no wildcards)
//	  key: order_id                 # field of the event's JSON payload: the business key
//	defaults:                       # optional: for every step that does not say otherwise
//	  timeout: 10s
//	  retry: {max_attempts: 3, backoff: 200ms, max_backoff: 5s}
//	steps:                          # 1..256, run in order
//	  - name: create-order          # unique in the definition
//	    service: order              # commands go to saga.cmd.order.<command>
//	    command: CreateOrder
//	    compensation: CancelOrder   # optional: the command that undoes the step
//	  - name: charge-payment
//	    service: payment
//	    command: ChargePayment
//	    compensation: RefundPayment
//	    timeout: 5s
//	    retry: {max_attempts: 5, backoff: 500ms, max_backoff: 10s}
//	  - name: schedule-shipping     # cannot be undone: no compensation
//	    service: shipping
//	    command: ScheduleShipping
//	    recovery: retry_forward     # the default without a compensation
//	    retry: {max_attempts: 20, backoff: 1s, max_backoff: 30s}
//
// A step's recovery says what happens when it does not succeed. compensate (the default with a
// compensation): when every attempt timed out, the step is compensated with the steps before it.
// retry_forward (the default without a compensation, and for every step after the definition's
// optional pivot: <step>): the step cannot be undone, so it is retried per its retry policy and
// never abandoned; when that budget is spent, or when it fails after the point of no return, the
// saga stops failed for an operator instead of ending compensated. A step without a compensation
// that has nothing to undo says recovery: compensate. A compensated step cannot follow a
// retry_forward step or the pivot, and a retry_forward step has no compensation (it would never
// run); see saga.Recovery for the whole semantics.
//
// A step may set timeout, retry and compensation_retry; the definition's defaults may set the
// same three. Each value comes from the step, else from defaults, else from the built-in
// defaults: timeout 30s; retry {max_attempts: 3, backoff: 1s, max_backoff: 30s, jitter: 0.2};
// compensation_retry {max_attempts: 10, backoff: 1s, max_backoff: 1m, jitter: 0.2}. A retry
// block may give only some of its fields: the others are filled the same way. Durations are Go
// duration strings ("5s", "1m30s", "200ms") between 1ms and 24h; max_attempts is 1..1000, jitter
// 0..1, and backoff must not exceed max_backoff once filled.
//
// The format is strict: an unknown field, a value of the wrong type, a duplicate key, a bare
// number where a duration belongs, an empty file and a second YAML document are all errors.
//
// # Errors
//
// Parse, ParseFile, Validate and Builder.Build report every problem at once, in an ErrorList
// sorted by position. Each *Error names the file, line and column (for Parse and ParseFile), the
// field path, and what is wrong:
//
//	order.yaml:7:14: steps[0].timeout: duration needs a unit, e.g. 5s; got the number 5
//	order.yaml:8:5: steps[0].retries: unknown field; did you mean "retry"?
//
// The position is that of the offending value; for a missing field, that of the enclosing
// field's key or of the mapping that lacks it. errors.Is(err, ErrInvalid) is true for all of
// them; errors.As(err, &list) gives the list to iterate.
//
// # Hostile input
//
// Definitions may come from untrusted hands, so Parse bounds its work: a file larger than 1 MiB
// is rejected before it is parsed, a steps list longer than 256 before its steps are decoded, and
// an ErrorList lists at most 100 errors (and how many more there were). YAML anchors, aliases, merge keys (<<) and explicit tags
// are rejected outright, with their positions, after the document is read into a tree of nodes
// that keeps each alias as one node and before any value is decoded, so an alias bomb ("billion
// laughs") costs work in proportion to its size, not to its expansion.
//
// # Building in Go
//
// New starts a Builder that applies the same defaults and rules:
//
//	d, err := definitions.New("order-fulfilment", 1).
//		Trigger("events.order.placed", "order_id").
//		DefaultTimeout(10*time.Second).
//		Step("create-order", "order", "CreateOrder").Compensation("CancelOrder").
//		Step("charge-payment", "payment", "ChargePayment").Timeout(5*time.Second).
//		Build()
//
// Validate checks a saga.Definition assembled by hand, with the same rules and field paths, but
// fills no defaults.
//
// # The registry
//
// A Registry holds definitions by name and version: Register, Get, Latest, List, and LoadDir to
// load a directory of files all or nothing. It is safe for concurrent use. Registering the same
// name and version twice is allowed only with an identical body (else ErrConflict), so a version,
// once known, never changes under a running instance.
//
// # Guarantees
//
// Every definition this package returns is valid (Validate returns nil for it) and complete:
// every step has its timeout and both retry policies filled in. Definitions from a Registry are
// shared between callers and must be treated as immutable; Register stores its own deep copy.
// Parsing a definition, rendering every field back to YAML and parsing again gives an equal value.
//
// # Editors
//
// Schema returns a JSON Schema (draft 2020-12) of the format, with a description of every field,
// for editors' completion and checks. It states the same rules except those a schema cannot
// express: unique step names, backoff <= max_backoff, the range of a duration, and the YAML-level
// rules.
package definitions
