package outbox

import (
	"time"
)

// Record is the metered usage of one upstream call made through the
// egress, as the egress hands it over once the call has ended. Each call
// yields exactly one Record, whatever way it ended.
type Record struct {
	// ID is unique per call (32 lowercase hex characters). It names the
	// call in every delivery made for it, so a delivery repeated after an
	// unknown outcome can be recognised by the receiver.
	ID string `json:"id"`
	// At is when the call ended.
	At time.Time `json:"at"`

	// KeyID is the key the call was made with: the platform's key_id for a
	// leased key, the 1-based position of a static key.
	KeyID int64 `json:"key_id"`
	// Leased is true when the key came from the platform, whose
	// openai-usage endpoint is then told about the call.
	Leased bool `json:"leased"`

	// Model is the model the upstream named in its answer, or else the
	// one the request named.
	Model            string `json:"model"`
	PromptTokens     int64  `json:"prompt_tokens"`
	CompletionTokens int64  `json:"completion_tokens"`
	TotalTokens      int64  `json:"total_tokens"`
	// UsageKnown is false when no usage could be read from the answer
	// (the upstream failed, or the answer was cut before its usage).
	UsageKnown bool `json:"usage_known"`
	// Success is true when the upstream answered 2xx and the answer was
	// read to its end.
	Success bool `json:"success"`

	// UserAutomationID is the user the app charged the call to (the
	// egress user header), 0 when none.
	UserAutomationID int64 `json:"user_automation_id,omitempty"`
	// Units is what the call cost that user, after settlement; 0 when no
	// budget applies.
	Units int64 `json:"units,omitempty"`

	// Endpoint is the upstream path called, e.g. "/v1/chat/completions".
	Endpoint string `json:"endpoint"`
	// Exit says how the call ended: see the Exit constants.
	Exit Exit `json:"exit"`
}

// Exit is how an egress call ended.
type Exit string

// The ways a call ends.
const (
	// ExitComplete: the upstream's answer was read to its end.
	ExitComplete Exit = "complete"
	// ExitClientGone: the app went away; the rest of the answer was
	// drained from the upstream (bounded) to read its usage.
	ExitClientGone Exit = "client_gone"
	// ExitUpstreamError: the upstream failed, reset the connection or
	// sent a broken answer.
	ExitUpstreamError Exit = "upstream_error"
	// ExitTimeout: the call ran out of time.
	ExitTimeout Exit = "timeout"
	// ExitShutdown: the sidecar's drain deadline cut the call.
	ExitShutdown Exit = "shutdown"
)
