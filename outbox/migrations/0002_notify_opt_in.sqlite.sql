-- The PostgreSQL outbox drops its NOTIFY trigger in this version; SQLite never had one (its relay
-- is woken in process). Kept so the versions of both dialects stay in step.
SELECT 1;
