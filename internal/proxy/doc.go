// Package proxy forwards every non-Zimmer request to the app and calls the
// app on the sidecar's behalf.
//
// It holds three things:
//
//   - the reverse proxy: one httputil.ReverseProxy with a Rewrite hook and
//     one tuned http.Transport for the app, which decides what the app
//     sees (cleaned path, forwarding headers set on purpose, the service
//     token never);
//   - the route table: per path pattern, whether the service token is
//     required (Protect) and how many ledger units a call costs (Meter),
//     charged before forwarding and refunded when the app answers 5xx or
//     not at all;
//   - the app hooks: zimmer.ProvisionHook and zimmer.KBBackend built from
//     mapping expressions (call templates and answer extraction).
//
// It does not decode Zimmer requests (package zimmer does), verify tokens
// (package auth supplies the middleware), store balances (a
// metering.Ledger does) or log: causes are reported through
// Options.OnError and Options.ErrorLog.
package proxy
