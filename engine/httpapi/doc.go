// Package httpapi is the orchestrator's HTTP API (JSON) and its Go client, which the sagaflow CLI
// uses. The server side wraps an *engine.Engine (or anything with the same methods); any number of
// replicas may serve it, since every call reads or writes the shared store.
//
// Routes (all bodies JSON; errors are {"error": "...", "code": "..."} with a 4xx/5xx status). The
// contract is openapi.yaml, served as GET /openapi.json; docs/api.md has curl examples:
//
//	POST /v1/sagas                      start: {"definition","version","business_key","input","idempotency_key"} → 201 {"id"}
//	GET  /v1/sagas?definition=&version=&status=&business_key=&needs_attention=true&started_after=&started_before=&limit=&before=
//	                                    → {"sagas":[summaries],"next":"<cursor>"}
//	GET  /v1/sagas/counts?<the same filters but status, limit, before>   → {"counts":{"running":N,...},"total":N}
//	GET  /v1/sagas/{id}                 → the instance
//	GET  /v1/sagas/{id}/history         → {"history":[...],"next":"<seq>"}  (?after=<seq>&limit=N: 500 by default, at most 5000)
//	GET  /v1/definitions/{name}/sagas/{key}   → the instance with that business key
//	POST /v1/sagas/{id}/cancel          {"reason"} → the instance
//	POST /v1/sagas/{id}/redrive         {"reason"} → the instance
//	POST /v1/sagas/{id}/resolve         {"reason"} → the instance (out of the operator's queue)
//	POST /v1/sagas/{id}/retry           {"reason","input_patch"|"input"} → the instance (its halted step retried; 409 when it cannot be)
//	GET  /v1/definitions                → {"definitions":[...],"versions":[{"name","version","hash","registered_at","counts":{...}}]}
//	GET  /healthz                       → {"status":"ok"} while the process serves (liveness)
//	GET  /readyz                        → 200 {"status":"ready"}, or 503 {"status":"not ready","not_ready":{"<check>":"<reason>"}}
//	GET  /openapi.json                  → the OpenAPI 3.1 document (no token needed)
//	GET  /v1/dlq?subject=&reason=&saga_id=&since=&older_than=&before=&limit=   → {"messages":[...],"next":<seq>} newest first
//	GET  /v1/dlq/{seq}                  → one dead letter whole, with headers
//	POST /v1/dlq/replay                 {"seqs":[...] or "filter":{...},"reason","dry_run"} → {"dry_run","messages":[...],"more"}
//	POST /v1/dlq/purge                  same body and answer
//
// The /v1/dlq routes (DLQHandler, over internal/dlq) read and change the dead-letter stream
// SAGA_DLQ; the node mounts them beside NewHandler's, as it does /readyz, since they need the bus.
// A replay republishes each message to its original subject with a new Nats-Msg-Id and
// Sagaflow-Replayed-* headers, then deletes it from SAGA_DLQ; a replay or purge needs a reason and
// writes one audit log line (docs/observability.md, "Dead letters").
//
// /readyz is served by the node (internal/server) with ReadyHandler: the database answers, the NATS
// connection is up, and Sagaflow's streams exist (docs/observability.md).
//
// Auth.Middleware (auth.go) requires a bearer token with a role (viewer for GET, operator for
// POST) on every route but /healthz, /readyz, /metrics and /openapi.json. The actor recorded in history for
// start, cancel, redrive, retry and resolve, and in the audit line and headers of a dead-letter
// replay or purge, is the token's name, with the X-Sagaflow-Actor request header as "on behalf
// of"; without authentication it is the header, or "api" when it is absent. Every such action
// writes one "audit" log line (handler.audit).
package httpapi
