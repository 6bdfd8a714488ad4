// Package deploytest checks the files under deploy/ with the parsers of the tools that read them:
// the Compose file as YAML against the repository (services, mounts, commands' flags), the
// Prometheus rules with Prometheus's own rule parser, every PromQL expression (rules and dashboard)
// with its PromQL parser and against the metrics the code really defines, the Grafana dashboard and
// provisioning, and the NATS samples with nats-server's configuration parser. There is no Docker
// engine here, so no container is run; the secure NATS sample (deploy/nats/secure.conf) is also run
// as an in-process nats-server, with test certificates, to show its users' permissions hold.
package deploytest
