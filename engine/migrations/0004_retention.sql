-- Retention deletes finished sagas oldest first: it finds them by finished_at (only completed and
-- compensated ones; a failed saga waits for an operator and is kept).
CREATE INDEX sagaflow_instances_finished ON sagaflow_instances (finished_at) WHERE finished_at IS NOT NULL;
