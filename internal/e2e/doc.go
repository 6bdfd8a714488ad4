// Package e2e holds the end-to-end tests of Sagaflow: the order example's four services and the
// orchestrator on real PostgreSQL and a real JetStream server, under the faults production meets —
// duplicate and lost messages, an orchestrator killed with SIGKILL, two replicas at once. It has
// no non-test code.
package e2e
