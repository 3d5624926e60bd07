// Package keys hands out OpenAI API keys for the egress calls of the app and
// applies the rotation rules to what the upstream answers.
//
// A Pool is the one interface the egress uses: Acquire picks a key for one
// call, Report takes the call's outcome back. Two sources implement it:
//
//   - Static holds keys the operator configured (from the config file, the
//     environment or a mounted Secret), for platforms that do not lease
//     keys yet.
//   - Leased asks the Zimmer platform for keys with the guide's lease
//     protocol (POST {platform}/api/automations/{id}/openai-key), caches
//     the leases in an LRU keyed by key id and expiry, refreshes them
//     before they expire and keeps using valid cached leases while the
//     platform is down (its calls go through a circuit breaker).
//
// Both apply the same local rules, those of the platform's own key manager:
// the least-used eligible key first (fewest requests in the last minute,
// then fewest tokens today, then the one used longest ago), each key's
// requests-per-minute and daily token limits, a disabled key after a 401 or
// 403, a cooldown after a 429 (whose deadline is only ever extended), an
// exhausted key after insufficient_quota or at its daily token limit (until
// the next UTC day), and a short penalty after a 5xx that sends the next
// call to another key when there is one.
//
// Keys are Secret values: they print, format, marshal and log as a
// redacted form and are read only through Secret.Reveal. No error, event or
// String method of this package contains a key or the service token.
//
// The package does not log: rotation events reach the caller through
// Options.OnEvent, called without any lock held. The one goroutine it
// starts is Leased's background renewal (one at a time), which
// Leased.Close cancels and waits for; Swappable.Close closes the pools it
// held. Every time comes from an injected clock.
package keys
