// Package metrics counts and times what the sidecar does, for operators.
//
// Every component reports through the Recorder interface. Nop discards
// everything at no cost, for a sidecar without an admin listener and for
// tests; Prometheus keeps the numbers on its own prometheus.Registry
// (never the process-wide default) together with the Go runtime and
// process collectors, and serves them in the Prometheus text format
// through Handler, which the wiring mounts at /metrics on the admin
// listener.
//
// Label values are bounded. Labels drawn from a fixed vocabulary (status
// classes, auth outcomes, ledger operations and outcomes, breaker and key
// states, lease events) map anything unknown to "other". Labels drawn from
// configuration or code (endpoint and route names, probe and breaker
// names, models) are made valid UTF-8, cut to MaxLabelLen bytes and capped
// in number; values past the cap are counted under "other". No user id,
// idempotency key, token or raw request path is ever a label value: the
// callers pass names, never request data.
//
// Families, all prefixed zimmer_sidecar_:
//
//	requests_total{endpoint,class}            answered public requests
//	request_duration_seconds{endpoint}        their latency (histogram)
//	auth_attempts_total{outcome}              service-token decisions
//	ledger_ops_total{op,outcome}              ledger calls
//	ledger_op_duration_seconds{op}            their latency (histogram)
//	probe_state{probe,state}                  1 for each probe's state
//	probe_latency_seconds{probe}              each probe's last latency
//	probe_consecutive_failures{probe}         failures since the last pass
//	health_status{status}                     1 for the /health verdict
//	breaker_state{breaker,state}              1 for each breaker's state
//	egress_lease_events_total{event}          key lease events
//	egress_leases_active                      leases held now
//	egress_keys{state}                        upstream keys per state
//	egress_tokens_total{model,kind}           tokens used, by model
//	egress_outbox_depth                       usage reports not yet sent
//
// The probe and health families are read from their sources at scrape
// time. The breaker family has no series until a breaker reports its
// state. The egress families are registered now so that dashboards can be
// built against them, but nothing feeds them until the egress component
// exists: until then the counters and gauges read 0.
//
// The package does not log; a failed scrape is the scraper's to report.
package metrics
