package zimmer

import (
	"context"
	"errors"
	"time"
)

// ProvisionCall is what a provision hook learns about the new account.
// BotToken is nil when the platform sent none.
type ProvisionCall struct {
	UserAutomationID int64
	UserID           int64
	BotToken         *string
	// DemoTokens is nil when the platform sent null or nothing: the
	// ledger's default applies.
	DemoTokens *int64
}

// ProvisionReply is what the app's hook may add to the provision answer.
// Empty fields keep the sidecar's defaults.
type ProvisionReply struct {
	ServiceURL string
	// IntegrationStatus is "active" or "pending"; "failed" is treated
	// like an error (502, no ledger change) and other values as "active".
	IntegrationStatus string
	Message           string
}

// ProvisionHook tells the app about a provisioning. A non-nil error means
// the app refused or failed: the sidecar makes no ledger change and answers
// the platform with a non-200.
type ProvisionHook interface {
	Provision(ctx context.Context, call ProvisionCall) (ProvisionReply, error)
}

// KB states in the guide's vocabulary. The platform dialect's values are
// derived from them.
const (
	KBEmpty      = "empty"
	KBReady      = "ready"
	KBProcessing = "processing"
	KBError      = "error"
)

// KBInfo is one account's knowledge-base state as the app reports it.
type KBInfo struct {
	State          string // one of the KB* constants
	LastUpdated    time.Time
	TotalDocuments int64
	ErrorLogs      []string
	BackupStatus   bool
}

// KBBackend answers KB status and reset from the app. A nil KBBackend
// means the automation has no knowledge base: both endpoints answer 404.
type KBBackend interface {
	Status(ctx context.Context, userAutomationID, userID int64) (KBInfo, error)
	// Reset empties the account's KB; SupportsReset reports whether a reset
	// is configured at all.
	Reset(ctx context.Context, userAutomationID int64) error
	SupportsReset() bool
}

// ErrNotFound may be wrapped by a KBBackend to say the app knows no such
// account; the endpoint then answers 404 instead of 502.
var ErrNotFound = errors.New("not found")
