package egress

import (
	"net/http"
	"strings"
)

// endpoint is what the egress knows of an API path: whether a successful
// answer reports token usage, and how a request caps its completion.
type endpoint int

// Endpoints, told apart by the path's last segments.
const (
	// endpointOther: an answer without usage the egress can read
	// (models, files, images, audio, batches, moderations...).
	endpointOther       endpoint = iota
	endpointChat                 // .../chat/completions
	endpointCompletions          // .../completions (legacy)
	endpointEmbeddings           // .../embeddings
	endpointResponses            // .../responses
)

// endpointOf classifies a request path as it is sent upstream (escaped:
// an encoded slash does not count as a segment boundary), ignoring
// case, as some compatible servers route.
func endpointOf(escapedPath string) endpoint {
	p := strings.ToLower(escapedPath)
	switch {
	case strings.HasSuffix(p, "/chat/completions"):
		return endpointChat
	case strings.HasSuffix(p, "/completions"):
		return endpointCompletions
	case strings.HasSuffix(p, "/embeddings"):
		return endpointEmbeddings
	case strings.HasSuffix(p, "/responses"):
		return endpointResponses
	}
	return endpointOther
}

// metered reports whether a successful answer carries usage the egress
// reads: only such calls can be charged to a budget.
func (e endpoint) metered() bool { return e != endpointOther }

// streamUsage reports whether a streamed request must ask for usage
// (stream_options.include_usage); the Responses API reports it unasked.
func (e endpoint) streamUsage() bool {
	return e == endpointChat || e == endpointCompletions
}

// capFields are the completion cap members an endpoint reads, the one
// the egress sets first; none for embeddings and others.
func (e endpoint) capFields() []string {
	switch e {
	case endpointChat:
		return []string{"max_completion_tokens", "max_tokens"}
	case endpointCompletions:
		return []string{"max_tokens"}
	case endpointResponses:
		return []string{"max_output_tokens"}
	}
	return nil
}

// spends reports whether a request method may spend tokens: every method
// but those that only read or delete. Such a call is charged to the user
// it names.
func spends(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodDelete,
		http.MethodTrace:
		return false
	}
	return true
}
