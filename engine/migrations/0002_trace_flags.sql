-- The W3C trace flags of the saga's trace (bit 0: sampled), decided at start and carried by every
-- command's traceparent.
ALTER TABLE sagaflow_instances ADD COLUMN trace_flags INTEGER NOT NULL DEFAULT 1;
