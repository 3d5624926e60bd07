// Package usage reads the token usage of OpenAI answers as they pass
// through the egress, and prepares requests so that streams report it.
//
// It holds three things:
//
//   - PrepareRequest and ParseRequest: before a chat completions or
//     completions call goes upstream, a streaming request is made to ask
//     for usage (stream_options.include_usage), by an edit in place that
//     keeps every other byte, and the app's own choice is reported; the
//     model, stream flag and token caps are read for budget reservations.
//   - Meter, an io.Writer that observes an answer's bytes, split anywhere,
//     and reads its usage: from a JSON answer (chat completions,
//     completions, embeddings, Responses API) its top-level "usage"; from
//     a server-sent event stream the chunk whose usage is set, or the
//     Responses API event that carries response.usage. Framer, under it,
//     splits a stream into events.
//   - Body, an io.ReadCloser around the upstream answer for the reverse
//     proxy: it meters what the app reads and, when the app did not ask
//     for usage, withholds the usage-only chunk that PrepareRequest made
//     the upstream add.
//
// The contract:
//
//   - Exact: the bytes the app reads from a Body are the upstream's bytes,
//     unchanged and in order, except the usage-only chunks a stripping
//     Body withholds (each removed whole, with its line terminators).
//     Without stripping nothing is held back; with it, an event waits
//     only for its own closing blank line. Framing does not depend on how
//     the bytes were split: LF, CR and CRLF line ends are accepted, a CRLF
//     split between its two bytes included. PrepareRequest changes only
//     stream_options and refuses a body it cannot change unambiguously.
//   - Bounded: one event's content is capped (Options.MaxEventBytes); a
//     JSON answer of any size is metered keeping only its top-level
//     "model" and "usage" values (64 KiB each at most); Drain stops at
//     its byte limit. No goroutine is started.
//   - Counted: nothing that fails to read is silently dropped. Malformed
//     JSON, a malformed usage object, an event over the cap and an answer
//     cut short each count in Result.Failures, with the first error in
//     Result.Err (which never holds answer bytes). Result.Usage.Found is
//     false when no usage arrived.
//
// The package does not log, read configuration, choose keys or record
// usage anywhere: callers take the Result and decide. Compressed answers
// are not decoded; the egress must ask the upstream for an identity
// encoding, or decode before metering.
package usage
