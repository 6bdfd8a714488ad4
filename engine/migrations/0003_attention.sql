-- The operator's queue: why a saga needs attention beyond its status (for example a late reply
-- reporting an effect that nothing will undo); empty when it needs none. Set by the engine,
-- cleared by a redrive.
ALTER TABLE sagaflow_instances ADD COLUMN attention TEXT NOT NULL DEFAULT '';
-- Lists of the queue (sagaflow list --needs-attention), newest first.
CREATE INDEX sagaflow_instances_attention ON sagaflow_instances (id) WHERE attention <> '';
