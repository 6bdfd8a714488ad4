-- Least privilege for Sagaflow in PostgreSQL (docs/security.md, "PostgreSQL roles").
--
-- Run once per database as a superuser (or the database's owner), with psql:
--   psql -v owner_password="'...'" -v app_password="'...'" -d sagaflow -f roles.sql
--
-- sagaflow_owner owns the schema and is the only role that changes it: "sagaflow migrate" (and each
-- service's participant.Migrate) run as it. sagaflow_app reads and writes rows and nothing else:
-- "sagaflow serve --migrate=false", "sagaflow relay --migrate=false" and the participants run as
-- it. The same pair serves a service's own database (with its own schema and passwords).

CREATE ROLE sagaflow_owner LOGIN PASSWORD :owner_password;
CREATE ROLE sagaflow_app LOGIN PASSWORD :app_password;

CREATE SCHEMA sagaflow AUTHORIZATION sagaflow_owner;
ALTER ROLE sagaflow_owner SET search_path = sagaflow;
ALTER ROLE sagaflow_app SET search_path = sagaflow;

-- No role but the owner may create objects anywhere in this database.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA sagaflow TO sagaflow_app;

-- Every table and sequence the owner creates, now or in a later migration, is the app's to read
-- and write, never to alter or drop.
ALTER DEFAULT PRIVILEGES FOR ROLE sagaflow_owner IN SCHEMA sagaflow
	GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO sagaflow_app;
ALTER DEFAULT PRIVILEGES FOR ROLE sagaflow_owner IN SCHEMA sagaflow
	GRANT USAGE, SELECT ON SEQUENCES TO sagaflow_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA sagaflow TO sagaflow_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA sagaflow TO sagaflow_app;
