// Package fakeplatform is a fake of the Zimmer platform for tests and local
// development: an http.Handler to mount on an httptest.Server or a loopback
// listener.
//
// It serves three endpoints, each behind the X-Zimmer-Service-Token of the
// automation concerned:
//
//   - POST /api/automations/{id}/openai-key: the guide's key lease. No
//     version of the platform implements it; the fake picks the
//     least-used active key of the automation as the platform's own key
//     manager does (fewest requests this minute, then fewest tokens
//     today, then used longest ago) and leases it for Options.LeaseTTL.
//   - POST /api/automations/{id}/openai-usage: the guide's usage report,
//     recorded whole and counted against the key. The guide defines no
//     idempotency; the fake honours an Idempotency-Key header, as the
//     sidecar's outbox expects of the platform: a report with a key
//     that already recorded one (for the same automation) records
//     nothing and gets the first answer, whatever its body. A request
//     that recorded nothing (refused) does not take its key.
//   - POST /api/automation-usage/consume: the platform's real ledger call,
//     with its real rules: demo tokens, while the demo is active, must
//     cover the whole request; paid tokens after; no sign check on units;
//     no idempotency (a retried request is charged twice); 200 even when
//     refused, 404 for an unknown user_automation_id, 401 for a missing
//     or wrong token.
//
// Request bodies are read as the platform's FastAPI models read them:
// integers may come as JSON numbers or numeric strings, unknown fields are
// ignored and a malformed body is a 422 with a FastAPI-style detail list.
//
// Failure injection (SetFault) makes an endpoint drop connections, answer
// slowly or answer a chosen status, before or after applying the request,
// so that retries, outboxes and breakers can be tested. Every request and
// every applied change is recorded for the test to read.
//
// The fake keeps everything in memory, starts no goroutines and never
// contacts anything.
package fakeplatform
