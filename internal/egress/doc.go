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
// is a path with an empty, "." or ".." segment ("//x", "/v1//chat"),
// which could climb out of the upstream's prefix, be cleaned into a
// redirect, or be read as a host (400 invalid_path).
//
// # Browsers
//
// A web page on the same machine could post to the loopback egress (a
// text/plain or multipart post needs no CORS preflight) and spend its
// keys. A request carrying what browsers send and server-side clients do
// not is refused with 403 browser_request_refused before its body is
// read: an Origin header, a Sec-Fetch-Site header, or a Sec-Fetch-Mode
// other than "cors". Node's fetch (undici, which the openai package uses
// on Node 18+) sends "Sec-Fetch-Mode: cors" on every request, alone, so
// that value by itself is served.
//
// # Headers
//
// Hop-by-hop headers, those the app names in Connection included, are
// removed first; then the app's Authorization, api-key,
// Proxy-Authorization, every X-Zimmer-* header (the service token among
// them), the user header and client forwarding headers are dropped, and
// only then is the leased key set (Authorization: Bearer, or api-key), so
// no header the app sends can remove it. The upstream is asked for an
// identity encoding; an answer it compresses anyway with gzip or deflate
// is decoded for the app (without Content-Encoding and Content-Length),
// and one in another encoding (br, zstd, layered) is replaced by the
// handler's 502 upstream_error, since it could be neither metered nor
// cleaned of keys. Answers reach the app without hop-by-hop headers,
// Set-Cookie and Alt-Svc.
//
// # Request bodies
//
// A request body is read whole, at most Options.MaxRequestBytes (413)
// and within Options.BodyTimeout (408 request_timeout: a body trickled
// byte by byte cannot hold a connection for long). A compressed body
// (any Content-Encoding but identity) is refused with 415
// unsupported_content_encoding, whether or not the call is charged: it
// could not be metered. Whether a body is JSON is decided by the body,
// not its Content-Type, since an upstream may not look at that header: a
// body that starts like a JSON object (after white space and a UTF-8 byte
// order mark), one sent as JSON, and every body on a metered endpoint
// must be a JSON object the handler can read (usage.ParseRequest); a
// member with a bad value gets 400 naming it ("the request body's n must
// be at least 1", with OpenAI's param set). Other bodies (uploads) pass
// as they are.
//
// # Usage
//
// A streamed chat completions or completions request is made to ask for
// usage (usage.PrepareRequest); when the app did not ask, the extra
// usage-only chunk is withheld from it. Answers are metered as they pass
// (usage.Body); event streams are flushed after every read, so no event
// is held back. An answer that breaks after its status went out (an
// upstream reset, a timeout) cuts the app's connection
// (http.ErrAbortHandler), so that a truncated answer never looks whole.
// The metered endpoints are those whose path ends (ignoring case, an
// encoded slash not counting) in /chat/completions, /completions,
// /embeddings or /responses.
//
// # Rotation
//
// An upstream 401, 403, 429 or 5xx answer, or a transport error, is
// reported to the pool (keys.OutcomeFromResponse, with the start of the
// error body, decoded, for insufficient_quota) and the call is sent again
// with another key, up to Options.MaxAttempts attempts, as long as
// nothing has reached the app, the app is still there and the call has
// time left. The body is buffered, so every attempt sends the same bytes.
// The last attempt's answer goes to the app. A retry after a transport
// error may repeat a call the upstream had already received and run (a
// connection reset after the request went out): the upstream may then
// spend tokens twice, and the first attempt is neither metered nor
// charged. With a single key, or when the pool hands out the same key
// again, the retry uses the same key. Set MaxAttempts to 1 where a
// repeated call costs more than a failed one.
//
// # Secrets
//
// Every error answer from the upstream (any status other than 2xx) is
// read whole, at most 64 KiB decoded, and every key the handler ever
// injected is cut out of it, together with every run of 8 or more
// characters of one of those keys, before it reaches the app; its
// Content-Length is dropped. An error answer longer than that is replaced
// by the handler's own. A 2xx answer, JSON or event stream, is cleaned as
// it streams of the exact keys injected into that call: each becomes a
// mask of the same length ("[REDACTED]***..."), so Content-Length and
// JSON stay valid. Only a tail of a read that could begin a key (never a
// line end, so never a complete event) waits for the next read or the
// end. Partial runs of a key in a 2xx answer are not cut. The same cut
// as for error answers applies to answer header values and to the error
// text the handler logs; it never logs bodies, headers or query strings.
// The handler remembers the last MaxRememberedKeys keys it injected.
//
// # Budgets
//
// A call is charged when a Budget is set, the app names a user in
// Options.UserHeader (a positive integer) and the method may spend tokens
// (any but GET, HEAD, OPTIONS, DELETE and TRACE). A charged call may go
// only to a metered endpoint: any other path (images, audio, batches,
// files...) is refused with 403 unmetered_endpoint before the body is
// read, since its usage cannot be metered and a budget cannot cover it.
// Calls that name no user (when RequireUser is false), and reading
// calls, pass uncharged.
//
// A charged call must have a JSON object body. A completion cap the
// endpoint reads (max_completion_tokens or max_tokens for chat,
// max_tokens for completions, max_output_tokens for responses) must be at
// least 1 (some servers read 0 as no cap). When the request names none,
// the handler sets Options.ReserveTokens in the endpoint's member
// (max_completion_tokens for chat), so that the answer is bounded by what
// was reserved; caps in members the endpoint does not read do not count.
// Embeddings have no cap. Before the upstream call the handler reserves
//
//	ceil(body bytes / 4) + cap × n    (cap: the request's, or ReserveTokens)
//
// tokens, converted at ceil(tokens / TokensPerUnit); a balance that
// cannot cover it gets 402. A reservation that overflows int64, or that
// the Budget refuses as more than one call may hold
// (metering.ErrInvalidUnits), is the request's problem: 400
// reservation_too_large, never a retryable 5xx.
//
// After the call the hold is settled to ceil(total tokens /
// TokensPerUnit) when a 2xx answer reported a non-zero usage that was
// read without a failure, and released when no 2xx answer came. A 2xx
// answer whose usage is missing, malformed, zero, or part of an answer
// that could not be read whole (cut short: the app went away and the
// drain did not reach the end, a reset, a timeout) is settled at the
// reservation, or at the usage read if that is larger. The prompt
// estimate can fall short (images, stored conversations, tokenisers
// that use more tokens than bytes / 4): when Settle charges less than
// the call cost because the balance ran out, the handler logs
// "egress budget shortfall" at WARN (call id, user, cost, charged) and
// calls Metrics.EgressShortfall. Without a Budget, a call that names a
// user records what it cost that user in Record.Units, by the same rules.
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
