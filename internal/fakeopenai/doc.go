// Package fakeopenai is a fake of an OpenAI-compatible API for tests and
// local development: an http.Handler to mount on an httptest.Server or a
// loopback listener. It never contacts anything and starts no goroutine
// of its own (each answer runs on the server's request goroutine).
//
// It serves, under any path prefix (so "/v1/chat/completions" and Azure's
// "/openai/deployments/{name}/chat/completions" both work), POST requests
// to:
//
//   - .../chat/completions: a chat.completion JSON answer, or with
//     "stream": true a server-sent event stream of chat.completion.chunk
//     events: a role chunk, one chunk per content word, a finish chunk,
//     then, only when the request has stream_options.include_usage true,
//     the usage-only chunk ("choices": [] and "usage"), then "data: [DONE]".
//   - .../completions: the legacy text_completion, JSON or streamed the
//     same way.
//   - .../embeddings: a list of embeddings with prompt and total tokens.
//   - .../responses: a Responses API "response" object, or a stream of
//     typed events ending with response.completed, which carries usage
//     (input_tokens, output_tokens, total_tokens); response.incomplete
//     instead when max_output_tokens cut the answer.
//   - GET .../models: a list holding DefaultModel.
//
// Any other path or method answers 404 "Invalid URL", as OpenAI does.
// Every answer has one choice ("n" is ignored); tools, function calls,
// logprobs, audio and images are not produced.
//
// The answers are shaped like the real API's, closely enough for the
// official clients (github.com/openai/openai-go/v3, the npm "openai"
// package) to parse them.
//
// # Keys
//
// A request's key is read from "Authorization: Bearer <key>" or, when
// that header is absent, from Azure's "api-key: <key>". A missing key and
// a key the server does not know answer 401 as OpenAI does. A known key
// answers per its State (SetKeyState): revoked (401 invalid_api_key),
// rate limited (429 rate_limit_exceeded with Retry-After, retry-after-ms
// and x-ratelimit-reset-requests), out of quota (429 insufficient_quota),
// failing with a chosen 5xx, or dropped (the connection is reset with no
// answer). Error messages name the key masked as OpenAI does
// ("sk-pr***wxyz"), or whole with Options.EchoKey, for tests that check
// secrets never reach logs or apps.
//
// # Usage
//
// Token counts are deterministic; see PromptTokens and CompletionTokens
// for the exact rules. The answer's text is the words "w1 w2 ... wN", one
// word per completion token and per stream content chunk.
//
// # Stream controls
//
// Options.Latency (or the X-Fake-Latency header) delays every answer;
// Options.Gzip compresses answers for clients that accept gzip.
//
// StreamControl shapes streamed answers: a delay between events, a pause
// after the first event (or Hold, to pause until the test releases it),
// CRLF line ends, one event split across two flushed writes, a connection
// reset after N events, and endless streams. Options.Stream sets the
// default; a request overrides it with X-Fake-* headers (see
// StreamControl for their names).
//
// # Records
//
// Every request is recorded in arrival order with its key, headers and
// body (Requests), and counted per key (Stats), so tests can assert what
// really arrived upstream.
package fakeopenai
