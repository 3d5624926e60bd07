// Package proxy forwards every non-Zimmer request to the app and calls the
// app on the sidecar's behalf.
//
// It holds three things:
//
//   - the reverse proxy: one httputil.ReverseProxy with a Rewrite hook and
//     one tuned http.Transport for the app, which decides what the app
//     sees (cleaned path, upper-case method, forwarding headers set on
//     purpose, the service token never);
//   - the route table: per path pattern and method, whether the service
//     token is required (Protect) and how many ledger units a call costs
//     (Meter), charged before forwarding and refunded when the app answers
//     5xx or not at all (a client that hangs up first stays charged);
//   - the app hooks: zimmer.ProvisionHook and zimmer.KBBackend built from
//     mapping expressions (call templates and answer extraction).
//
// Every call to the app, proxied or made by a hook, goes through one
// transport with an optional circuit breaker (Breaker, on
// sony/gobreaker): after too many failures (no answer, a timeout or a
// 5xx) it refuses calls for a while without contacting the app, proxied
// ones with 503 JSON and Retry-After and hook calls with an *OpenError,
// then lets a probe through. An idempotent call (GET, HEAD, OPTIONS, PUT,
// DELETE) whose body can be replayed is sent once more when its
// connection was refused, reset or closed before any answer arrived, so
// nothing had reached the client; it counts once in the breaker and a
// metered call is charged once.
//
// Methods are matched in upper case, since common app frameworks treat
// "post" as POST, and X-HTTP-Method-Override, X-Method-Override and
// X-HTTP-Method (in any spelling) are removed from every proxied request,
// so a GET cannot become a POST past a method-limited route. A method
// carried in the body, such as a "_method" form field that some
// frameworks honour, is the app's concern: the proxy does not read bodies
// to route, so an app that honours one must not rely on method-limited
// routes for it (or must protect and meter every method of the path).
//
// An Idempotency-Key on a metered route charges a call once. The proxy
// keeps no response cache: a retry of a call whose charge stands gets 409
// instead of the app's answer, and only a call the app failed (refunded)
// may be retried under the same key.
//
// It does not decode Zimmer requests (package zimmer does), verify tokens
// (package auth supplies the middleware and the StripAuthorization hook),
// store balances (a metering.Ledger does) or log: causes are reported
// through Options.OnError and Options.ErrorLog.
package proxy
