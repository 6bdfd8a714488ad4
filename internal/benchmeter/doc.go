// Package benchmeter measures what a stretch of work costs the whole system, for
// "sagaflow bench saga": the CPU time of this process (the services, the orchestrator, the driver
// and an in-process NATS server all live in it), the CPU time of the PostgreSQL backends serving
// one database, the transactions committed in that database, and the messages JetStream stored.
//
// # Usage
//
//	m, err := benchmeter.New(benchmeter.Config{Stats: admin, Database: "bench_1a2b", JetStream: js})
//	err = m.Start(ctx)          // waits for the statistics to settle, takes the readings
//	... run the work ...
//	err = m.Stop(ctx)           // CPU and JetStream readings, while the backends still live
//	... close every connection to Database ...
//	figs, err := m.Finish(ctx, sagas) // transaction counters, once the backends have exited
//
// # What the figures mean, and what they cannot see
//
//   - Process CPU is getrusage(RUSAGE_SELF): user + system time of every thread of this process.
//   - Backend CPU is utime + stime from /proc/<pid>/stat of every client backend connected to
//     Database (pg_stat_activity), read at Start and at Stop. A backend present at Stop but not at
//     Start counts from zero (it started during the work). A backend that exited before Stop took
//     its CPU time with it; the meter notices (the pid is gone, or pg_stat_database.sessions grew
//     by more than the new pids it saw) and then reports no backend CPU, with a note, rather than a
//     number that is too small. The same happens when the backends cannot be read here: PostgreSQL
//     on another machine, in a container with its own PID namespace, or /proc not readable.
//     PostgreSQL's own background processes (WAL writer, checkpointer, …) are not counted.
//   - Transactions are pg_stat_database.xact_commit (and xact_rollback) of Database, so Database
//     should be used by the measured system only; Stats must be connected to another database so
//     that the meter's own queries do not count. See Finish for how the counters are made exact.
//   - Publishes are the messages the streams accepted: the sum over every stream of its last
//     sequence number (which grows with every stored message, whatever the retention, and not
//     with a duplicate JetStream dropped).
//
// Unix only for the process CPU; the backend CPU needs Linux's /proc.
package benchmeter
