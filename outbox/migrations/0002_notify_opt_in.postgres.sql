-- Commits no longer NOTIFY on their own. A NOTIFY in a transaction takes PostgreSQL's
-- cluster-wide notify lock at commit, so the trigger serialised every commit that wrote to the
-- outbox, while the processes that commit publish from memory and their relays poll. A writer in
-- another process than its relay asks for the wake-up (outbox.WriterConfig.Notify), on the same
-- channel, 'sagaflow_outbox_<schema>'.
DROP TRIGGER IF EXISTS sagaflow_outbox_notify ON sagaflow_outbox;
DROP FUNCTION IF EXISTS sagaflow_outbox_notify();
