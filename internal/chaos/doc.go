// Package chaos holds the chaos test of the whole order system (TestChaos, in chaos_test.go): the
// real binaries as separate processes — two "sagaflow serve" replicas, the order example's four
// services (examples/order/cmd/order-service), a nats-server with JetStream and a private
// PostgreSQL cluster, all started by the test on 127.0.0.1 — driven with a few hundred orders
// through the HTTP API while the test kills orchestrators, services and nats-server with SIGKILL,
// crashes PostgreSQL (pg_ctl stop -m immediate), wipes the JetStream store and republishes saga
// commands and replies as duplicates. Then every saga must have finished, and SQL written in the
// test checks the business across the five databases: nothing doubled, nothing lost, no process
// restarted but the ones the test killed.
//
// It needs initdb and pg_ctl (scripts/test.sh installs Debian's postgresql when they are missing;
// SAGAFLOW_TEST_PG_BIN names their directory) and a Go toolchain to build the binaries. Run it
// alone with:
//
//	go test -run TestChaos -v ./internal/chaos/
//
// docs/observability.md ("Chaos test") describes what it does and what it proves.
package chaos
