// Package auth verifies the Zimmer service token carried by the
// X-Zimmer-Service-Token header (and, when enabled, by
// Authorization: Bearer) and limits failed attempts per client address.
//
// A Verifier holds the configured tokens: plaintext, SHA-256 digests or
// bcrypt hashes, several at once so a token can be rotated without
// downtime. Plaintext and digest tokens are compared in constant time, every
// configured token on every request; bcrypt work is cached for valid callers
// and bounded for everyone else. An empty token list denies every request.
//
// A Limiter counts failed attempts per connection peer. A client that has
// spent its budget still gets the cheap checks (the constant-time digest
// comparisons and the bcrypt cache), so a valid token passes even when a
// stranger behind the same ingress address used the budget up; it gets
// no uncached bcrypt work and is refused with 429 when the cheap checks
// fail. The Limiter lives apart from the Verifier so that a configuration
// reload can swap the Verifier while the failure history survives.
//
// Verifier.IsServiceToken and Verifier.StripServiceBearer let the proxy
// keep a service token sent as a Bearer credential on an open route away
// from the app.
//
// The package knows nothing about routes: callers decide which handlers sit
// behind Verifier.Require. It never logs; outcomes reach the caller through
// Options.OnResult, which names the client address but never the token.
package auth
