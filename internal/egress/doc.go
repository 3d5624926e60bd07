// Package egress is the app's way out to OpenAI: an http.Handler for one
// upstream (the base-URL mode). The app points its OpenAI base URL at the
// egress listener and sends any placeholder key; the handler forwards each
// call to the configured upstream with a key from a keys.Pool, meters the
// answer's token usage, charges it to a user when asked, and hands one
// outbox.Record per call to a Sink.
//
// # Destination
//
// Only the configured upstream is ever contacted. The request's path
// (and query) is appended to the upstream's base URL, which may carry a
// path prefix (Azure, compatible servers): with the upstream
// https://api.openai.com the app's base URL is http://127.0.0.1:PORT/v1.
// The Host header never changes the destination, an absolute-form request
// naming another host, CONNECT and WebSocket upgrades are refused, and so
// is a path with "." or ".." segments, which could climb out of the
// upstream's prefix.
//
// # Headers
//
// Hop-by-hop headers, those the app names in Connection included, are
// removed first; then the app's Authorization, api-key,
// Proxy-Authorization, every X-Zimmer-* header (the service token among
// them), the user header and client forwarding headers are dropped, and
// only then is the leased key set (Authorization: Bearer, or api-key), so
// no header the app sends can remove it. The upstream is asked for an
// identity encoding, since compressed answers cannot be metered. Answers
// reach the app without hop-by-hop headers, Set-Cookie and Alt-Svc.
//
// # Usage
//
// A JSON request body is read whole (at most Options.MaxRequestBytes) and
// parsed with usage.ParseRequest. A streamed chat completions or
// completions request is made to ask for usage (usage.PrepareRequest);
// when the app did not ask, the extra usage-only chunk is withheld from it.
// Answers are metered as they pass (usage.Body); event streams are flushed
// after every read, so no event is held back. An answer that breaks after
// its status went out (an upstream reset, a timeout) cuts the app's
// connection (http.ErrAbortHandler), so that a truncated answer never
// looks whole.
//
// # Rotation
//
// An upstream 401, 403, 429 or 5xx answer, or a transport error, is
// reported to the pool (keys.OutcomeFromResponse, with the start of the
// error body for insufficient_quota) and the call is sent again with
// another key, up to Options.MaxAttempts attempts, as long as nothing has
// reached the app, the app is still there and the call has time left. The
// body is buffered, so every attempt sends the same bytes. The last
// attempt's answer goes to the app. A retry after a transport error may
// repeat a call the upstream had received; that first attempt is then
// neither metered nor charged.
//
// # Secrets
//
// Every error answer from the upstream (any status other than 2xx) is
// read whole, at most 64 KiB, and every key the handler ever injected is
// cut out of it, together with every run of 8 or more characters of one
// of those keys, before it reaches the app; its Content-Length is
// dropped. An error answer longer than that is replaced by the handler's
// own. The same cut applies to answer header values and to the error text
// the handler logs; it never logs bodies, headers or query strings. The
// handler remembers the last MaxRememberedKeys keys it injected.
//
// # Budgets
//
// When the app names a user in Options.UserHeader (a positive integer)
// and a Budget is set, a POST (the only method that spends tokens) is
// charged to that user. Before the upstream call the handler reserves
// units for
//
//	ceil(body bytes / 4) + max_tokens × n    (or + ReserveTokens)
//
// tokens, converted at ceil(tokens / TokensPerUnit) (max_tokens is the
// largest of max_tokens, max_completion_tokens and max_output_tokens); a
// balance that cannot cover it gets 402. After the call the hold is
// settled to ceil(total tokens / TokensPerUnit) when the answer reported
// usage, and released when no 2xx answer came. A 2xx answer without usage
// is settled at the reservation when it was cut short (the app went away
// and the drain did not reach the end, a reset, a timeout) or when its
// endpoint reports usage (chat/completions, completions, embeddings,
// responses), and released otherwise (listing models, files).
//
// # Exactly once
//
// Every call that reached the upstream ends in one finalisation, whatever
// way it ended (a complete answer, an app that went away mid-stream, an
// upstream reset, a timeout, a shutdown, a panic in the handler): the
// lease is reported to the pool with the tokens used, the Budget is
// settled or released, and one Record is enqueued. The app going away
// does not end the upstream call: the handler keeps reading the answer,
// without delivering it, for at most DrainTimeout and DrainBytes, to read
// its final usage. Finalisation runs after the handler returns, so the
// app's answer is not delayed by the Budget or the Sink; Wait and
// Shutdown wait for it.
//
// The package does not read configuration, choose keys or deliver
// records: the keys, metering and outbox packages do, behind Pool, Budget
// and Sink.
package egress
