package zimmer

import "time"

// The answers below carry the union of the fields the integration guide
// and the platform read, so either side finds what it expects. They are
// exported for end-to-end tests and the check command, which decode them.

// TimeLayout is how every time in an answer is written: UTC with
// microseconds and a numeric offset, as in the guide's examples
// ("2025-01-10T16:54:49.650619+00:00"). Python's datetime.fromisoformat
// (every version since 3.7), JavaScript's Date and Go's time.RFC3339 all
// parse it, which is not true of a "Z" suffix.
const TimeLayout = "2006-01-02T15:04:05.000000-07:00"

// FormatTime writes t in UTC with TimeLayout.
func FormatTime(t time.Time) string {
	return t.UTC().Format(TimeLayout)
}

// Integration states of a provision answer.
const (
	IntegrationActive  = "active"
	IntegrationPending = "pending"
	IntegrationFailed  = "failed"
)

// KB health as the platform's admin page shows it (the POST dialect of KB
// status). Derived from the guide's KB states: ready and empty are
// healthy, processing is a warning, error is an error.
const (
	KBHealthy = "healthy"
	KBWarning = "warning"
	KBFailing = "error"
)

// ProvisionAnswer is the 200 answer to provision. ServiceURL is omitted
// when empty. ProvisionedAt is when the account was first provisioned, so
// a repeated call answers the same time.
type ProvisionAnswer struct {
	Success            bool   `json:"success"`
	Message            string `json:"message"`
	ProvisionedAt      string `json:"provisioned_at"`
	IntegrationStatus  string `json:"integration_status"`
	ServiceURL         string `json:"service_url,omitempty"`
	UserAutomationID   int64  `json:"user_automation_id"`
	DemoTokens         int64  `json:"demo_tokens"`
	PaidTokens         int64  `json:"paid_tokens"`
	AlreadyProvisioned bool   `json:"already_provisioned"`
}

// ConsumeAnswer is the 200 answer to usage consume, in both dialects. A
// refusal is still a 200 with Accepted false. Success mirrors Accepted,
// TokensConsumed is what was actually debited (0 when refused) and
// RemainingTokens is demo plus paid.
type ConsumeAnswer struct {
	Accepted            bool   `json:"accepted"`
	RemainingDemoTokens int64  `json:"remaining_demo_tokens"`
	RemainingPaidTokens int64  `json:"remaining_paid_tokens"`
	Message             string `json:"message"`
	Success             bool   `json:"success"`
	TokensConsumed      int64  `json:"tokens_consumed"`
	RemainingTokens     int64  `json:"remaining_tokens"`
	UserAutomationID    int64  `json:"user_automation_id"`
}

// KBStatusAnswer is the 200 answer to KB status. Status is in the guide's
// vocabulary (KBEmpty, KBReady, KBProcessing, KBError) for a GET and in
// the platform's (KBHealthy, KBWarning, KBFailing) for a POST; KBState
// always holds the guide's value. ErrorLogs is never null. LastUpdated is
// the time of this answer when the app reports none.
type KBStatusAnswer struct {
	Status           string   `json:"status"`
	KBState          string   `json:"kb_state"`
	LastUpdated      string   `json:"last_updated"`
	TotalDocuments   int64    `json:"total_documents"`
	Healthy          bool     `json:"healthy"`
	BackupStatus     bool     `json:"backup_status"`
	ErrorLogs        []string `json:"error_logs"`
	SupportsReset    bool     `json:"supports_reset"`
	UserAutomationID int64    `json:"user_automation_id"`
}

// KBResetAnswer is the 200 answer to KB reset: the guide reads success and
// reset_at, the platform reads status.
type KBResetAnswer struct {
	Success          bool   `json:"success"`
	Status           string `json:"status"`
	Message          string `json:"message"`
	ResetAt          string `json:"reset_at"`
	UserAutomationID int64  `json:"user_automation_id"`
}

// FailureAnswer is the non-200 answer when the app (through a hook or the
// KB backend) failed or timed out: Detail for FastAPI-style readers,
// Success false and Message for the guide's. IntegrationStatus is set for
// provision, Status for KB calls.
type FailureAnswer struct {
	Detail            string `json:"detail"`
	Success           bool   `json:"success"`
	Message           string `json:"message"`
	IntegrationStatus string `json:"integration_status,omitempty"`
	Status            string `json:"status,omitempty"`
}

// ErrorAnswer is every other error: {"detail": "..."}, as FastAPI answers.
type ErrorAnswer struct {
	Detail string `json:"detail"`
}
