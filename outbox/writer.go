package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go"

	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/sqldb"
	"github.com/sagaflow/sagaflow/internal/telemetry"
)

// Tx is what Write and Record need of the caller's transaction; *sql.Tx and *sqlx.Tx both have it.
type Tx interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// DefaultMaxPayload is NATS's default max_payload, 1 MiB.
const DefaultMaxPayload = 1 << 20

// orderingKey is the metadata key WithOrderingKey sets; it is stored in its own column and never
// sent as a header (the "_sagaflow_" prefix keeps bus.Publisher from sending it).
const orderingKey = "_sagaflow_ordering_key"

// WriterConfig tunes a Writer.
type WriterConfig struct {
	// MaxPayload is the largest message accepted, payload plus headers as NATS counts them; default
	// 1 MiB. Keep it at or below the NATS server's max_payload (nats.Conn.MaxPayload): a larger
	// message would be committed and then quarantined by the relay.
	MaxPayload int
	// Notify, on PostgreSQL, makes Write also send a NOTIFY on the outbox's channel
	// ("sagaflow_outbox_" + the current schema) in the caller's transaction, which PostgreSQL
	// delivers at commit: it wakes a relay in another process at once (one with
	// RelayConfig.ListenDSN, such as "sagaflow relay"). Leave it off when the committing process
	// runs the relay (it publishes from memory, Relay.Committed) or when the relay's poll
	// (RelayConfig.PollInterval) is soon enough: a NOTIFY takes PostgreSQL's cluster-wide notify
	// lock at commit, which serialises the commits of every session that sends one. Ignored on
	// SQLite.
	Notify bool
}

// Writer adds messages to the outbox inside the caller's transaction. It is stateless apart from
// its configuration and safe for concurrent use.
type Writer struct {
	dialect sqldb.Dialect
	cfg     WriterConfig
}

// NewWriter returns a Writer for db's database: the SQL dialect (PostgreSQL through lib/pq, or
// SQLite through modernc.org/sqlite) is detected from db's driver. cfg may be nil for the defaults.
// Write takes the transaction itself, so one Writer serves every transaction of db.
func NewWriter(db *sqlx.DB, cfg *WriterConfig) *Writer {
	var c WriterConfig
	if cfg != nil {
		c = *cfg
	}
	if c.MaxPayload <= 0 {
		c.MaxPayload = DefaultMaxPayload
	}
	return &Writer{dialect: sqldb.DialectOf(db), cfg: c}
}

// Publisher returns a Watermill message.Publisher that writes to the outbox inside tx: a Watermill
// application (a cqrs.EventBus, a router handler) publishes its domain events through it and they
// go out exactly once, after tx commits, and never if it rolls back. Publish(topic, msgs...) is
// Write(ctx, tx, topic, msgs...). The publisher is only valid while tx is open; Close does nothing.
//
// It keeps ctx because Watermill's Publish takes none: ctx is the context of the transaction's
// unit of work (its trace context is injected into every message that has none).
func (w *Writer) Publisher(ctx context.Context, tx Tx) message.Publisher {
	return txPublisher{ctx: ctx, w: w, tx: tx}
}

type txPublisher struct {
	ctx context.Context //nolint:containedctx // Watermill's Publish has no context parameter
	w   *Writer
	tx  Tx
}

func (p txPublisher) Publish(topic string, msgs ...*message.Message) error {
	return p.w.Write(p.ctx, p.tx, topic, msgs...)
}

func (p txPublisher) Close() error { return nil }

// WithOrderingKey sets msg's ordering key and returns msg: the relay publishes messages with the
// same key in the order they were written (see the package documentation for what that means with
// concurrent writers and failures). The key is not sent as a header.
func WithOrderingKey(msg *message.Message, key string) *message.Message {
	msg.Metadata.Set(orderingKey, key)
	return msg
}

// rowsPerInsert bounds one multi-row INSERT (5 parameters a row) well under both databases'
// parameter limits.
const rowsPerInsert = 500

// Envelope is one message and the subject it goes to.
type Envelope struct {
	Subject string
	Message *message.Message
}

// Write adds msgs to the outbox inside tx, each to subject: WriteAll with one Envelope per message.
func (w *Writer) Write(ctx context.Context, tx Tx, subject string, msgs ...*message.Message) error {
	envs := make([]Envelope, len(msgs))
	for i, m := range msgs {
		envs[i] = Envelope{Subject: subject, Message: m}
	}
	return w.WriteAll(ctx, tx, envs)
}

// WriteAll adds the envelopes' messages to the outbox inside tx, each to its envelope's subject,
// in one multi-row insert; they are published after tx commits, and never if it rolls back. A
// message with an empty UUID gets a UUIDv7 (set on the message, so the caller can read it); the
// relay publishes it with Nats-Msg-Id "<subject>:<UUID>" (bus.MsgID). Metadata become headers,
// except "_sagaflow_" keys. A message without a traceparent gets ctx's trace context (W3C
// traceparent, tracestate, baggage), so its consumer's span joins the trace of whatever wrote it.
//
// Every envelope is checked before anything is written: a nil message, an invalid subject or a
// message over MaxPayload (*TooLargeError) fails the call with an error matching
// ErrInvalidMessage, and nothing of it is written. An error from tx (sql.ErrTxDone for a finished
// transaction, a unique violation for a message id already in the outbox) is wrapped; the
// transaction is then the caller's to roll back.
func (w *Writer) WriteAll(ctx context.Context, tx Tx, envs []Envelope) error {
	if tx == nil {
		return errors.New("outbox: write: transaction is nil")
	}
	if len(envs) == 0 {
		return nil
	}
	rows := make([]row, len(envs))
	for i, e := range envs {
		if e.Message != nil {
			telemetry.Inject(ctx, e.Message.Metadata)
		}
		r, err := w.row(e.Subject, e.Message)
		if err != nil {
			return err
		}
		rows[i] = r
	}
	for start := 0; start < len(rows); start += rowsPerInsert {
		end := min(start+rowsPerInsert, len(rows))
		query, args := insertQuery(w.dialect, rows[start:end])
		if _, err := tx.ExecContext(ctx, query, args...); err != nil {
			return fmt.Errorf("outbox: write %d message(s) to %s: %w", end-start, rows[start].subject, err)
		}
	}
	if w.cfg.Notify && w.dialect == sqldb.Postgres {
		// Several in one transaction are delivered once: PostgreSQL folds equal notifications.
		if _, err := tx.ExecContext(ctx, `SELECT pg_notify('sagaflow_outbox_' || current_schema(), '')`); err != nil {
			return fmt.Errorf("outbox: notify relays: %w", err)
		}
	}
	return nil
}

// row is one outbox row to insert.
type row struct {
	messageID, subject string
	headers            []byte
	payload            []byte
	orderingKey        sql.NullString
}

func (w *Writer) row(subject string, m *message.Message) (row, error) {
	if m == nil {
		return row{}, fmt.Errorf("%w: message is nil", ErrInvalidMessage)
	}
	if m.UUID == "" {
		id, err := uuid.NewV7()
		if err != nil {
			return row{}, fmt.Errorf("outbox: message id: %w", err)
		}
		m.UUID = id.String()
	}
	if err := validateSubject(subject); err != nil {
		return row{}, fmt.Errorf("%w: message %s: %w", ErrInvalidMessage, m.UUID, err)
	}
	headers := make(map[string]string, len(m.Metadata))
	// NATS counts "NATS/1.0\r\n", each "Key: value\r\n", the final "\r\n", and the payload.
	size := len("NATS/1.0\r\n\r\n") + len(nats.MsgIdHdr) + len(bus.MsgID(subject, m.UUID)) + 4 + len(m.Payload)
	for k, v := range m.Metadata {
		if strings.HasPrefix(k, "_sagaflow_") {
			continue
		}
		headers[k] = v
		size += len(k) + len(v) + 4
	}
	if size > w.cfg.MaxPayload {
		return row{}, &TooLargeError{MessageID: m.UUID, Subject: subject, Size: size, Limit: w.cfg.MaxPayload}
	}
	hj, err := json.Marshal(headers)
	if err != nil {
		return row{}, fmt.Errorf("outbox: message %s: encode headers: %w", m.UUID, err)
	}
	payload := []byte(m.Payload)
	if payload == nil {
		payload = []byte{} // the column is NOT NULL
	}
	r := row{messageID: m.UUID, subject: subject, headers: hj, payload: payload}
	if k := m.Metadata.Get(orderingKey); k != "" {
		r.orderingKey = sql.NullString{String: k, Valid: true}
	}
	return r, nil
}

// validateSubject accepts a concrete NATS subject: dot-separated non-empty tokens, no whitespace or
// control characters, no wildcard tokens. Hand-written because nats.go checks only for whitespace
// at publish time and the server's full check lives in nats-server, too big a dependency for a
// library that services import.
func validateSubject(s string) error {
	if s == "" {
		return errors.New("subject is empty")
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f {
			return fmt.Errorf("subject %q: contains whitespace or a control character", s)
		}
	}
	for _, tok := range strings.Split(s, ".") {
		switch tok {
		case "":
			return fmt.Errorf("subject %q: has an empty token", s)
		case "*", ">":
			return fmt.Errorf("subject %q: wildcards cannot be published to", s)
		}
	}
	return nil
}

func insertQuery(d sqldb.Dialect, rows []row) (string, []any) {
	var b strings.Builder
	b.WriteString(`INSERT INTO sagaflow_outbox (message_id, subject, headers, payload, ordering_key) VALUES `)
	args := make([]any, 0, len(rows)*5)
	for i, r := range rows {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("(?, ?, ?, ?, ?)")
		args = append(args, r.messageID, r.subject, string(r.headers), r.payload, r.orderingKey)
	}
	return sqlx.Rebind(bindType(d), b.String()), args
}

func bindType(d sqldb.Dialect) int {
	if d == sqldb.Postgres {
		return sqlx.DOLLAR
	}
	return sqlx.QUESTION
}
