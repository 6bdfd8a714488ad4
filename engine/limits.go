package engine

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/outbox"
)

// MaxBusinessKeyBytes bounds a business key (and an idempotency key): an operator's search term,
// sent in the Sagaflow-Business-Key header of every command.
const MaxBusinessKeyBytes = 256

// NATSMaxHeaderBytes is the largest header block NATS JetStream stores (it encodes the length in
// 16 bits); a larger one is refused with "header size exceeds maximum allowed of 64k".
const NATSMaxHeaderBytes = 65535

// DefaultMaxInputBytes is Config.MaxInputBytes's default: half of NATS's default max_payload, so
// the commands that carry the input also carry the steps' outputs.
const DefaultMaxInputBytes = outbox.DefaultMaxPayload / 2

// LimitError is returned by Start for something over a size limit. It matches ErrTooLarge and
// ErrInvalidInput (errors.Is).
type LimitError struct {
	// What is over the limit: "business key", "idempotency key", "input", "command headers",
	// "command".
	What string
	// Size and Limit are in bytes.
	Size, Limit int
	// Setting names the limit: a Config field, or NATS's own.
	Setting string
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("%s is %d bytes, over the limit of %d bytes (%s)", e.What, e.Size, e.Limit, e.Setting)
}

// Is makes errors.Is(err, ErrTooLarge) and errors.Is(err, ErrInvalidInput) true.
func (e *LimitError) Is(target error) bool { return target == ErrTooLarge || target == ErrInvalidInput }

// CheckBusinessKey returns nil for a business key the engine accepts: at most MaxBusinessKeyBytes
// bytes of printable UTF-8 (letters, marks, numbers, punctuation, symbols and the ASCII space; no
// control or format characters). Otherwise it returns a *LimitError or an error matching
// ErrInvalidInput that says what is wrong. The empty key is valid (a saga without one).
func CheckBusinessKey(key string) error { return checkKey("business key", key) }

func checkKey(what, key string) error {
	if len(key) > MaxBusinessKeyBytes {
		return &LimitError{What: what, Size: len(key), Limit: MaxBusinessKeyBytes, Setting: "engine.MaxBusinessKeyBytes"}
	}
	if !utf8.ValidString(key) {
		return fmt.Errorf("%s is not valid UTF-8: %w", what, ErrInvalidInput)
	}
	for i, r := range key {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%s contains %U at byte %d, want printable characters only: %w", what, r, i, ErrInvalidInput)
		}
	}
	return nil
}

// checkStart checks what a start is given against the limits, before anything is stored.
func (e *Engine) checkStart(businessKey string, input []byte, opts StartOptions) error {
	var errs []error
	if err := checkKey("business key", businessKey); err != nil {
		errs = append(errs, err)
	}
	if err := checkKey("idempotency key", opts.IdempotencyKey); err != nil {
		errs = append(errs, err)
	}
	if len(input) > e.cfg.MaxInputBytes {
		errs = append(errs, &LimitError{What: "input", Size: len(input), Limit: e.cfg.MaxInputBytes, Setting: "Config.MaxInputBytes"})
	}
	return errors.Join(errs...)
}

// checkHeaders checks the header block of each outgoing message against Config.MaxHeaderBytes
// (at most NATS's limit), counted as NATS does.
func (e *Engine) checkHeaders(msgs []outbox.Envelope) error {
	for _, m := range msgs {
		if n := headerBytes(m); n > e.cfg.MaxHeaderBytes {
			return &LimitError{What: "command headers", Size: n, Limit: e.cfg.MaxHeaderBytes, Setting: "Config.MaxHeaderBytes, at most NATS's 64 KiB"}
		}
	}
	return nil
}

// headerBytes is the size of e's header block on the wire: "NATS/1.0\r\n", one "Key: value\r\n"
// per header (Nats-Msg-Id "<subject>:<id>" included; local "_sagaflow_" metadata excluded) and the
// final "\r\n".
func headerBytes(e outbox.Envelope) int {
	m := e.Message
	n := len("NATS/1.0\r\n\r\n") + len(nats.MsgIdHdr) + len(": \r\n") + len(bus.MsgID(e.Subject, m.UUID))
	for k, v := range m.Metadata {
		if strings.HasPrefix(k, "_sagaflow_") {
			continue
		}
		n += len(k) + len(": \r\n") + len(v)
	}
	return n
}
