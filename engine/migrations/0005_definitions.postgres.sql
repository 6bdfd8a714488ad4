-- Every definition version the orchestrator registered, as it parsed it: a running saga finishes on
-- the version it started with even when that version's file is gone (the engine loads it from
-- here at start), and a file that changed under running sagas is recognised (hash).
CREATE TABLE sagaflow_definitions (
	name          TEXT NOT NULL,
	version       INTEGER NOT NULL,
	body          JSONB NOT NULL,
	hash          TEXT NOT NULL,
	registered_at TIMESTAMPTZ NOT NULL,
	CONSTRAINT sagaflow_definitions_pkey PRIMARY KEY (name, version)
);
-- Counting the sagas of each version (definitions list, a changed file's refusal).
CREATE INDEX sagaflow_instances_definition_version ON sagaflow_instances (definition, version, status);
