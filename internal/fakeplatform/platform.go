package fakeplatform

import (
	"encoding/json"
	"net/http"
	"slices"
	"sync"
	"time"
)

// DefaultLeaseTTL is how long a lease lasts when Options.LeaseTTL is zero.
const DefaultLeaseTTL = 10 * time.Minute

// maxBody bounds every request body.
const maxBody = 1 << 20

// Options configure a Platform.
type Options struct {
	// Now is the clock (lease expiry, rpm windows, token days, record
	// times); nil means time.Now.
	Now func() time.Time
	// LeaseTTL is how long a lease lasts unless its Key says otherwise.
	LeaseTTL time.Duration
}

// Key is an OpenAI key the platform leases to one automation.
type Key struct {
	// ID is the key_id; unique across automations.
	ID           int64
	AutomationID int64
	APIKey       string
	// Model is the model answered in the lease; "" echoes the request's.
	Model string
	// RPMLimit and DailyTokenLimit are the usage_limits answered (0 is
	// sent as null: unlimited). The fake also honours them when it picks
	// a key, counting the usage reported to it.
	RPMLimit        int
	DailyTokenLimit int64
	// TTL overrides Options.LeaseTTL for this key.
	TTL time.Duration
	// Disabled keys are never leased.
	Disabled bool
}

// Account is a user's automation on the platform's ledger.
type Account struct {
	UserAutomationID int64
	// AutomationID names the automation whose token may charge it.
	AutomationID int64
	DemoTokens   int64
	DemoActive   bool
	DemoExpired  bool
	// PaidTokens is the platform's tokens_remaining (its null reads as 0).
	PaidTokens int64
}

// LeaseRecord is one lease request that passed authentication.
type LeaseRecord struct {
	AutomationID int64
	Model        string
	MaxTokens    int64
	// KeyID is the key leased, 0 when none was available.
	KeyID int64
	At    time.Time
}

// UsageReport is one recorded openai-usage report.
type UsageReport struct {
	AutomationID     int64
	KeyID            int64
	TokensUsed       int64
	Model            string
	PromptTokens     int64
	CompletionTokens int64
	Success          bool
	// IdempotencyKey is the request's Idempotency-Key header, "" when
	// it had none.
	IdempotencyKey string
	At             time.Time
}

// ConsumeRecord is one consume request the ledger ruled on.
type ConsumeRecord struct {
	UserAutomationID int64
	Units            int64
	UsageType        string
	Meta             json.RawMessage
	Accepted         bool
	Message          string
	At               time.Time
}

// Endpoint names one of the fake's endpoints for fault injection and
// counting.
type Endpoint string

// Endpoints.
const (
	EndpointLease   Endpoint = "lease"
	EndpointReport  Endpoint = "report"
	EndpointConsume Endpoint = "consume"
)

// Platform is the fake. Its methods are safe for concurrent use with the
// handler.
type Platform struct {
	opts Options
	mux  *http.ServeMux

	mu       sync.Mutex
	tokens   map[int64]string // automation id -> service token
	keys     map[int64]*keyUsage
	accounts map[int64]*Account
	faults   map[Endpoint]*Fault
	calls    map[Endpoint]int
	leases   []LeaseRecord
	reports  []UsageReport
	consumes []ConsumeRecord
	// reportKeys holds the answer of each report recorded with an
	// Idempotency-Key, by automation and key; replays counts the
	// requests it answered again.
	reportKeys map[reportKey]result
	replays    int
}

// reportKey is an Idempotency-Key of one automation's reports.
type reportKey struct {
	automationID int64
	key          string
}

// keyUsage is a key and the usage reported for it, as the platform's
// key manager counts it.
type keyUsage struct {
	Key
	minuteStart  time.Time
	minuteCalls  int
	day          int64
	tokensToday  int64
	lastUsed     time.Time
	exhaustedDay int64 // the UTC day it was exhausted on, or -1
}

// New returns an empty platform: seed it with AddAutomation, AddKey and
// AddAccount.
func New(opts Options) *Platform {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.LeaseTTL <= 0 {
		opts.LeaseTTL = DefaultLeaseTTL
	}
	p := &Platform{
		opts:     opts,
		tokens:   make(map[int64]string),
		keys:     make(map[int64]*keyUsage),
		accounts: make(map[int64]*Account),
		faults:   make(map[Endpoint]*Fault),
		calls:    make(map[Endpoint]int),

		reportKeys: make(map[reportKey]result),
	}
	p.mux = http.NewServeMux()
	p.mux.Handle("/api/automations/{id}/openai-key", p.endpoint(EndpointLease, p.lease))
	p.mux.Handle("/api/automations/{id}/openai-usage", p.endpoint(EndpointReport, p.report))
	p.mux.Handle("/api/automation-usage/consume", p.endpoint(EndpointConsume, p.consume))
	p.mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusNotFound, detail("Not Found"))
	})
	return p
}

// Handler returns the platform's HTTP handler.
func (p *Platform) Handler() http.Handler { return p.mux }

// AddAutomation registers an automation and its service token, replacing
// the token of a known one (a rotation).
func (p *Platform) AddAutomation(id int64, token string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tokens[id] = token
}

// AddKey adds or replaces a key; its usage starts at zero.
func (p *Platform) AddKey(k Key) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keys[k.ID] = &keyUsage{Key: k, exhaustedDay: -1}
}

// SetKeyDisabled disables or re-enables a key.
func (p *Platform) SetKeyDisabled(id int64, disabled bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if k := p.keys[id]; k != nil {
		k.Disabled = disabled
	}
}

// KeyTokensToday returns the tokens reported for a key today.
func (p *Platform) KeyTokensToday(id int64) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := p.keys[id]
	if k == nil {
		return 0
	}
	k.rollover(p.opts.Now())
	return k.tokensToday
}

// AddAccount adds or replaces an account.
func (p *Platform) AddAccount(a Account) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.accounts[a.UserAutomationID] = &a
}

// Account returns an account's current state.
func (p *Platform) Account(userAutomationID int64) (Account, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	a, ok := p.accounts[userAutomationID]
	if !ok {
		return Account{}, false
	}
	return *a, true
}

// Leases returns every lease request that passed authentication.
func (p *Platform) Leases() []LeaseRecord {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.leases)
}

// Reports returns every usage report recorded, in arrival order. A
// report repeated with the same Idempotency-Key is recorded once.
func (p *Platform) Reports() []UsageReport {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.reports)
}

// ReportReplays returns how many reports were answered from an earlier
// request with the same Idempotency-Key, recording nothing.
func (p *Platform) ReportReplays() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.replays
}

// Consumes returns every consume the ledger ruled on, in arrival order.
func (p *Platform) Consumes() []ConsumeRecord {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.consumes)
}

// Calls returns how many requests reached an endpoint, including those a
// fault answered and those refused.
func (p *Platform) Calls(ep Endpoint) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls[ep]
}

// utcDay numbers the UTC day of t.
func utcDay(t time.Time) int64 {
	s := t.Unix()
	d := s / 86400
	if s%86400 < 0 {
		d--
	}
	return d
}

// rollover starts a new token day, as the platform's daily reset does.
func (k *keyUsage) rollover(now time.Time) {
	if d := utcDay(now); d != k.day {
		k.day, k.tokensToday = d, 0
	}
}
