package benchmeter

import "errors"

// ErrNotBackend means a pid that pg_stat_activity reported is not, on this machine, a PostgreSQL
// backend of the measured database: PostgreSQL runs elsewhere or in another PID namespace.
var ErrNotBackend = errors.New("not a PostgreSQL backend of the database on this machine")
