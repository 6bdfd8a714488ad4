// Package deploytest checks the files under deploy/ with the parsers of the tools that read them:
// the Compose file as YAML against the repository (services, mounts, commands' flags), the
// Prometheus rules with Prometheus's own rule parser, every PromQL expression (rules and dashboard)
// with its PromQL parser and against the metrics the code really defines, the Grafana dashboard and
// provisioning, and the NATS cluster sample with nats-server's configuration parser. There is no
// Docker engine here, so nothing is run.
package deploytest
