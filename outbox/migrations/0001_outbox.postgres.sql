-- The transactional outbox: rows written inside services' transactions, published by the relay.
CREATE TABLE sagaflow_outbox (
	seq            BIGSERIAL PRIMARY KEY,
	message_id     TEXT NOT NULL UNIQUE,
	subject        TEXT NOT NULL,
	headers        JSONB NOT NULL DEFAULT '{}',
	payload        BYTEA NOT NULL,
	ordering_key   TEXT,
	created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
	published_at   TIMESTAMPTZ,
	attempts       INTEGER NOT NULL DEFAULT 0,
	last_error     TEXT,
	quarantined_at TIMESTAMPTZ
);

-- What the relay claims, in order.
CREATE INDEX sagaflow_outbox_pending ON sagaflow_outbox (seq)
	WHERE published_at IS NULL AND quarantined_at IS NULL;
-- "Is an earlier row of this ordering key still waiting?"
CREATE INDEX sagaflow_outbox_pending_key ON sagaflow_outbox (ordering_key, seq)
	WHERE published_at IS NULL AND quarantined_at IS NULL AND ordering_key IS NOT NULL;
-- Pruning published rows kept for the retention window.
CREATE INDEX sagaflow_outbox_published ON sagaflow_outbox (published_at)
	WHERE published_at IS NOT NULL;

-- Wake the relays listening on this schema's channel when rows are committed (NOTIFY is
-- delivered at commit, and once per transaction for the same channel and payload).
CREATE FUNCTION sagaflow_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_notify('sagaflow_outbox_' || TG_TABLE_SCHEMA, '');
	RETURN NULL;
END
$$;
CREATE TRIGGER sagaflow_outbox_notify AFTER INSERT ON sagaflow_outbox
	FOR EACH STATEMENT EXECUTE FUNCTION sagaflow_outbox_notify();

-- The inbox: message ids a consumer has applied, so a redelivery applies nothing twice.
CREATE TABLE sagaflow_inbox (
	consumer     TEXT NOT NULL,
	message_id   TEXT NOT NULL,
	processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
	PRIMARY KEY (consumer, message_id)
);
CREATE INDEX sagaflow_inbox_processed ON sagaflow_inbox (consumer, processed_at);
