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
// A Limiter counts failed attempts per connection peer and refuses further
// attempts before any verification once a client has spent its budget. It
// lives apart from the Verifier so that a configuration reload can swap the
// Verifier while the failure history survives.
//
// The package knows nothing about routes: callers decide which handlers sit
// behind Verifier.Require. It never logs; outcomes reach the caller through
// Options.OnResult, which names the client address but never the token.
package auth
