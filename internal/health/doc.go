// Package health decides what the sidecar answers on GET /health and on the
// Kubernetes endpoints /livez and /readyz.
//
// A Monitor probes the app over HTTP on fixed intervals. Each probe is a
// small state machine with thresholds (consecutive passes or failures
// before a flip), so one slow or lost answer does not flip the verdict.
// Other components may feed the verdict through registered checks. The
// /health handler answers from the last known state and never waits on the
// app; its body is encoded once per state change, not once per request.
//
// Readiness is kept apart on purpose: it describes the sidecar process
// (started, not shutting down), never the app behind it. The app's health
// reaches the platform through /health, where the platform's classifier
// (see Classify) reads it.
//
// The package does not proxy, log or install signal handlers.
package health
