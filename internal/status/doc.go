// Package status renders the sidecar's status page: a small, read-only
// HTML page (and the same data as JSON) for the admin listener.
//
// The page shows the /health verdict and how the platform's classifier
// would read it right now, each probe's state and recent results, the
// request count, success rate and latency of every endpoint over the last
// hour (kept by Stats), and, when the wiring supplies them, circuit
// breakers, egress keys and the outbox backlog.
//
// The page is rendered on the server with html/template, loads nothing
// from anywhere (no script, font, image or stylesheet; the answer's
// Content-Security-Policy forbids them) and refreshes itself every ten
// seconds. The package keeps no state besides Stats and does not log.
package status
