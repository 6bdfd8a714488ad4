// Package sqldb is the SQL plumbing shared by Sagaflow's stores: opening PostgreSQL (lib/pq) and
// SQLite (modernc.org/sqlite, pure Go) with the settings each needs, naming the dialect of a handle,
// running a function in a transaction, and translating driver errors into our sentinels.
//
// Queries are written once with ? placeholders and rebound with sqlx for PostgreSQL; the few real
// dialect differences live in one storage file per package, keyed on Dialect.
package sqldb
