-- Saga instances and their append-only history (component "engine").
CREATE TABLE sagaflow_instances (
	id              TEXT PRIMARY KEY,
	definition      TEXT NOT NULL,
	version         INTEGER NOT NULL,
	business_key    TEXT NOT NULL DEFAULT '',
	status          TEXT NOT NULL,
	state           TEXT NOT NULL,
	trace_id        TEXT NOT NULL DEFAULT '',
	deadline        TIMESTAMP,
	idempotency_key TEXT,
	row_version     INTEGER NOT NULL DEFAULT 1,
	history_seq     INTEGER NOT NULL DEFAULT 0,
	created_at      TIMESTAMP NOT NULL,
	updated_at      TIMESTAMP NOT NULL,
	finished_at     TIMESTAMP,
	CONSTRAINT sagaflow_instances_idempotency UNIQUE (definition, idempotency_key)
);

-- Timers claim due instances in deadline order; finished instances have no deadline.
CREATE INDEX sagaflow_instances_deadline ON sagaflow_instances (deadline) WHERE deadline IS NOT NULL;
-- List filters, newest first (ids are UUIDv7, so id order is start order).
CREATE INDEX sagaflow_instances_definition ON sagaflow_instances (definition, id);
CREATE INDEX sagaflow_instances_status ON sagaflow_instances (status, id);
CREATE INDEX sagaflow_instances_business_key ON sagaflow_instances (business_key, id);

CREATE TABLE sagaflow_history (
	saga_id TEXT NOT NULL,
	seq     INTEGER NOT NULL,
	at      TIMESTAMP NOT NULL,
	kind    TEXT NOT NULL,
	step    TEXT NOT NULL DEFAULT '',
	attempt INTEGER NOT NULL DEFAULT 0,
	action  TEXT NOT NULL DEFAULT '',
	outcome TEXT NOT NULL DEFAULT '',
	actor   TEXT NOT NULL DEFAULT '',
	detail  TEXT,
	-- A transition applied twice cannot be recorded twice.
	CONSTRAINT sagaflow_history_pkey PRIMARY KEY (saga_id, seq)
);
