-- Barrier pruning finds the rows older than Config.BarrierRetention by created_at.
CREATE INDEX sagaflow_barrier_created ON sagaflow_barrier (created_at);
