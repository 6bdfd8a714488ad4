-- The transactional outbox: rows written inside services' transactions, published by the relay.
-- Times are Unix milliseconds (UTC).
CREATE TABLE sagaflow_outbox (
	seq            INTEGER PRIMARY KEY AUTOINCREMENT,
	message_id     TEXT NOT NULL UNIQUE,
	subject        TEXT NOT NULL,
	headers        TEXT NOT NULL DEFAULT '{}',
	payload        BLOB NOT NULL,
	ordering_key   TEXT,
	created_at     INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)),
	published_at   INTEGER,
	attempts       INTEGER NOT NULL DEFAULT 0,
	last_error     TEXT,
	quarantined_at INTEGER
);

CREATE INDEX sagaflow_outbox_pending ON sagaflow_outbox (seq)
	WHERE published_at IS NULL AND quarantined_at IS NULL;
CREATE INDEX sagaflow_outbox_pending_key ON sagaflow_outbox (ordering_key, seq)
	WHERE published_at IS NULL AND quarantined_at IS NULL AND ordering_key IS NOT NULL;
CREATE INDEX sagaflow_outbox_published ON sagaflow_outbox (published_at)
	WHERE published_at IS NOT NULL;

-- The inbox: message ids a consumer has applied, so a redelivery applies nothing twice.
CREATE TABLE sagaflow_inbox (
	consumer     TEXT NOT NULL,
	message_id   TEXT NOT NULL,
	processed_at INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)),
	PRIMARY KEY (consumer, message_id)
);
CREATE INDEX sagaflow_inbox_processed ON sagaflow_inbox (consumer, processed_at);
