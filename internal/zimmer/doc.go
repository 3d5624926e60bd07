// Package zimmer serves the endpoints a Zimmer automation must answer:
// health, provision, usage consume, KB status and KB reset.
//
// It knows where those endpoints live (under every configured prefix, with
// and without a trailing slash, never redirecting), which methods they
// take (a wrong method gets 405 with Allow before authentication), how the
// two request dialects look (the integration guide's and the platform's),
// and which union of fields both sides read in an answer. It keeps each
// call inside the platform's time budget with a context deadline.
//
// It does not store balances (that is metering.Ledger), verify tokens (the
// injected Auth middleware does), talk to the app (the ProvisionHook and
// KBBackend do) or log: causes of failures go to the OnError hook, and the
// client only ever sees a short fixed JSON message.
package zimmer
