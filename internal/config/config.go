package config

import (
	"log/slog"
	"net/url"
	"time"
)

// Config is the whole configuration. The toml tags name the keys of the
// file; a zero pointer section means "not configured".
type Config struct {
	Automation Automation `toml:"automation"`
	Listen     Listen     `toml:"listen"`
	Log        Log        `toml:"log"`
	Auth       Auth       `toml:"auth"`
	App        App        `toml:"app"`
	Ledger     Ledger     `toml:"ledger"`
	Zimmer     Zimmer     `toml:"zimmer"`
	TLS        TLS        `toml:"tls"`
	Egress     Egress     `toml:"egress"`

	// Routes come from [[route]] tables, in file order. None: every path
	// that is not a Zimmer endpoint is proxied unprotected and unmetered
	// when App.Passthrough is true.
	Routes []Route `toml:"route"`

	warnings []Problem
}

// Automation identifies the automation to the platform.
type Automation struct {
	// Version is reported by /health. Required.
	Version string `toml:"version"`
	// ID is the platform's automation id; 0 means unknown.
	ID int64 `toml:"id"`
	// PlatformURL is the platform's base URL, for key leases, usage
	// reports and its ledger; nil when the sidecar never calls it.
	PlatformURL *url.URL `toml:"platform_url"`
	// PlatformToken is the service token sent to the platform, as a
	// secret reference; unset means the first plain token of auth.tokens
	// (the platform uses one secret in both directions).
	PlatformToken Secret `toml:"platform_token"`
}

// Listen configures the two listeners.
type Listen struct {
	// Public is the host:port of the listener the platform and users
	// reach. Required.
	Public string `toml:"public"`
	// Admin is the host:port of the admin listener (livez, readyz, the
	// ledger admin API). Empty disables it.
	Admin string `toml:"admin"`
	// MaxConnections bounds open connections per listener; 0 is unlimited.
	MaxConnections int `toml:"max_connections"`
	// ReadHeaderTimeout bounds reading a request's headers.
	ReadHeaderTimeout time.Duration `toml:"read_header_timeout"`
	// IdleTimeout closes keep-alive connections idle this long.
	IdleTimeout time.Duration `toml:"idle_timeout"`
	// MaxHeaderBytes bounds a request's header block.
	MaxHeaderBytes Size `toml:"max_header_bytes"`
	// MaxBody bounds request bodies of Zimmer endpoints and of protected
	// or metered routes.
	MaxBody Size `toml:"max_body"`
	// RequestsPerSecond is how many requests one client address may send
	// a second on the public listener, on average; 0 disables the limit
	// (the default). Behind a layer-7 proxy every request comes from the
	// proxy's address, so enable it only where the listener sees the
	// clients themselves.
	RequestsPerSecond int `toml:"requests_per_second"`
	// Burst is how many requests a rested client may send at once; 0
	// means one second's worth (RequestsPerSecond).
	Burst int `toml:"burst"`
	// ShutdownGrace is how long in-flight requests may drain on shutdown.
	ShutdownGrace time.Duration `toml:"shutdown_grace"`
	// ShutdownDelay is how long the sidecar keeps accepting requests after
	// readiness dropped, so load balancers stop sending before the
	// listener closes. Zero closes at once (a preStop sleep does the same).
	ShutdownDelay time.Duration `toml:"shutdown_delay"`
}

// Log configures logging.
type Log struct {
	// Level is one of debug, info, warn, error.
	Level slog.Level `toml:"level"`
	// Access enables one access-log line per request.
	Access bool `toml:"access"`
}

// Auth configures the service token check.
type Auth struct {
	// Tokens are the accepted service tokens, resolved from their secret
	// references. Several are valid at once during a rotation. An empty
	// list denies every protected request (fail closed).
	Tokens []Token `toml:"tokens"`
	// AcceptBearer also accepts "Authorization: Bearer <token>".
	AcceptBearer bool `toml:"accept_bearer"`
	// FailuresPerMinute is how many failed attempts one client address may
	// make per minute; 0 disables the limit.
	FailuresPerMinute int `toml:"failures_per_minute"`
	// BcryptCacheSize is how many verified bcrypt results are cached; 0
	// disables the cache.
	BcryptCacheSize int `toml:"bcrypt_cache_size"`
}

// App describes the application behind the sidecar.
type App struct {
	// URL is the app's absolute http or https base URL.
	URL *url.URL `toml:"url"`
	// Passthrough proxies paths that no route names; false answers 404.
	Passthrough bool `toml:"passthrough"`
	// ConnectTimeout bounds dialing the app.
	ConnectTimeout time.Duration `toml:"connect_timeout"`
	// ResponseHeaderTimeout bounds waiting for the app's response headers.
	ResponseHeaderTimeout time.Duration `toml:"response_header_timeout"`
	// MaxIdleConns bounds idle keep-alive connections to the app.
	MaxIdleConns int `toml:"max_idle_conns"`
	// Probes come from [[app.probe]]. None: /health reports only the
	// sidecar itself.
	Probes []Probe `toml:"probe"`
	// Breaker is the circuit breaker for calls to the app.
	Breaker Breaker `toml:"breaker"`
}

// Probe is one active health check of the app.
type Probe struct {
	// Name identifies the probe in /health; it defaults to Path and is
	// unique among probes.
	Name string `toml:"name"`
	// Path is requested on the app; it starts with "/".
	Path string `toml:"path"`
	// Method is an upper-case HTTP method.
	Method string `toml:"method"`
	// Every is the interval between probes.
	Every time.Duration `toml:"every"`
	// Timeout bounds one probe; it is shorter than Every.
	Timeout time.Duration `toml:"timeout"`
	// ExpectStatus is the status code that counts as a pass.
	ExpectStatus int `toml:"expect_status"`
	// PassAfter consecutive passes turn the probe healthy (>= 1).
	PassAfter int `toml:"pass_after"`
	// FailAfter consecutive failures turn the probe failed (>= 1).
	FailAfter int `toml:"fail_after"`
	// SlowAfter marks a pass slower than this as slow (degraded); 0
	// never marks a pass slow.
	SlowAfter time.Duration `toml:"slow_after"`
	// Required: a failure makes the whole automation unhealthy; false
	// only degrades it.
	Required bool `toml:"required"`
}

// Ledger backends.
const (
	BackendBolt     = "bolt"
	BackendPostgres = "postgres"
)

// Demo rules: how a consume is charged while demo tokens remain.
const (
	// DemoWhole: demo tokens must cover the whole request (the platform's
	// rule); otherwise paid tokens pay for all of it once the demo is over.
	DemoWhole = "whole"
	// DemoSpill: demo tokens are used first and paid tokens cover the rest.
	DemoSpill = "spill"
)

// Ledger configures the token ledger.
type Ledger struct {
	// Backend names the store: BackendBolt (one process) or
	// BackendPostgres (replicas sharing one ledger).
	Backend string `toml:"backend"`
	// Path is the bolt database file.
	Path string `toml:"path"`
	// DSN is the postgres connection string, resolved from a secret
	// reference like auth.tokens ("env:NAME", "file:/path" or the value).
	// It may hold a password: it is never shown in messages. Required by
	// the postgres backend; its search_path parameter picks the schema.
	DSN Secret `toml:"dsn"`
	// MaxConns bounds the postgres connection pool of this process (>= 1).
	MaxConns int `toml:"max_conns"`
	// ConnectTimeout bounds one postgres connection attempt (> 0).
	ConnectTimeout time.Duration `toml:"connect_timeout"`
	// Migrate applies pending postgres schema migrations at start; false
	// only checks the schema version, for deployments that run the
	// migrate command separately.
	Migrate bool `toml:"migrate"`
	// DefaultDemoTokens are granted when provision sends demo_tokens
	// null (>= 0).
	DefaultDemoTokens int64 `toml:"default_demo_tokens"`
	// MaxUnits is the upper bound of one consume (>= 1).
	MaxUnits int64 `toml:"max_units"`
	// DemoRule is DemoWhole or DemoSpill.
	DemoRule string `toml:"demo_rule"`
	// IdempotencyRetention is how long the records of idempotency keys
	// are kept; the sidecar prunes older ones every hour, in both
	// backends. While a key's record is kept, a retry with the key is
	// answered from it (never charged twice) and its debit can still be
	// refunded or settled; after that the key is new again. Zero keeps
	// them forever; otherwise at least MinIdempotencyRetention. The
	// journal is never pruned.
	IdempotencyRetention time.Duration `toml:"idempotency_retention"`
}

// DefaultIdempotencyRetention keeps idempotency records for a week: far
// beyond the minutes to hours in which clients and the platform retry a
// call, and beyond a weekend's outage after which queued calls are sent
// again, while a ledger serving a steady load stops growing with keys.
const DefaultIdempotencyRetention = 7 * 24 * time.Hour

// MinIdempotencyRetention bounds ledger.idempotency_retention from
// below: a record must outlive its call, its refund or settle (a
// streamed answer may run for many minutes) and any prompt retry.
const MinIdempotencyRetention = time.Hour

// Zimmer configures the Zimmer endpoints.
type Zimmer struct {
	// Prefixes under which every Zimmer endpoint is served. Each starts
	// with "/" and has no trailing slash, except "/" itself; no
	// duplicates; at least one.
	Prefixes []string `toml:"prefixes"`
	// ServiceURL is the template answered by provision as service_url,
	// e.g. "https://x/u/{user_automation_id}"; empty answers none.
	ServiceURL string `toml:"service_url"`
	// Provision is the optional app hook called before the ledger change;
	// nil calls none.
	Provision *Provision `toml:"provision"`
	// KBStatus maps KB status to an app call; nil makes both KB endpoints
	// answer 404.
	KBStatus *KBStatus `toml:"kb_status"`
	// KBReset maps KB reset to an app call; nil means the KB cannot be
	// reset (supports_reset false). It requires KBStatus.
	KBReset *KBReset `toml:"kb_reset"`
	// Deadlines bound each endpoint's work, app calls included.
	Deadlines Deadlines `toml:"deadlines"`
}

// Provision is the app hook called on provision.
type Provision struct {
	// Call is the request sent to the app. Required.
	Call Call `toml:"call"`
	// Body is the JSON body sent with Call; nil or empty sends none. String values
	// may hold {field} templates (see TemplateFields).
	Body map[string]any `toml:"body"`
	// ServiceURL, IntegrationStatus and Message optionally take the
	// provision answer's fields from the app's JSON answer.
	ServiceURL        Extract `toml:"service_url"`
	IntegrationStatus Extract `toml:"integration_status"`
	Message           Extract `toml:"message"`
}

// KBStatus is the app hook answering KB status.
type KBStatus struct {
	// Call is the request sent to the app. Required.
	Call Call `toml:"call"`
	// Body is the JSON body sent with Call; nil or empty sends none.
	Body map[string]any `toml:"body"`
	// The answer fields, each read from the app's JSON answer; an unset
	// Extract leaves the sidecar's default for that field.
	TotalDocuments Extract `toml:"total_documents"`
	LastUpdated    Extract `toml:"last_updated"`
	// State must yield one of empty, ready, processing, error (after
	// its map, if any).
	State        Extract `toml:"state"`
	ErrorLogs    Extract `toml:"error_logs"`
	BackupStatus Extract `toml:"backup_status"`
}

// KBReset is the app hook performing a KB reset.
type KBReset struct {
	// Call is the request sent to the app. Required.
	Call Call `toml:"call"`
	// Body is the JSON body sent with Call; nil or empty sends none.
	Body map[string]any `toml:"body"`
}

// Route is one entry of the route table for paths the app serves.
type Route struct {
	// Path is exact ("/x"), a prefix ("/x/*") or has parameters
	// ("/x/{id}").
	Path string `toml:"path"`
	// Methods are upper-case HTTP methods; empty matches all.
	Methods []string `toml:"methods"`
	// Protect requires the service token.
	Protect bool `toml:"protect"`
	// Meter charges each request before it is forwarded; nil is free.
	Meter *Meter `toml:"meter"`
}

// Meter says what one request on a route costs and whom it is charged to.
type Meter struct {
	// Units charged per request (1 <= Units <= ledger.max_units).
	Units int64 `toml:"units"`
	// UsageType is recorded with the charge. Required.
	UsageType string `toml:"usage_type"`
	// User locates the user_automation_id in the request. Required.
	User UserRef `toml:"user"`
}

// templateFields are the request fields a {name} template may use in hook
// calls, hook bodies and zimmer.service_url.
var templateFields = []string{"user_automation_id", "user_id", "bot_token", "demo_tokens"}

// TemplateFields returns the request fields a {name} template may use in
// hook calls, hook bodies and zimmer.service_url.
func TemplateFields() []string {
	return append([]string(nil), templateFields...)
}

// Default returns the configuration used for every key the file and the
// environment leave unset. It is not valid on its own: automation.version
// has no default.
func Default() *Config {
	return &Config{
		Listen: Listen{
			Public:            ":8080",
			Admin:             "127.0.0.1:9090",
			MaxConnections:    4096,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       120 * time.Second,
			MaxHeaderBytes:    32 * KiB,
			MaxBody:           1 * MiB,
			ShutdownGrace:     25 * time.Second,
		},
		Log: Log{Level: slog.LevelInfo, Access: true},
		Auth: Auth{
			Tokens:            []Token{},
			FailuresPerMinute: 30,
			BcryptCacheSize:   1024,
		},
		App: App{
			URL:                   &url.URL{Scheme: "http", Host: "127.0.0.1:8000"},
			Passthrough:           true,
			ConnectTimeout:        2 * time.Second,
			ResponseHeaderTimeout: 60 * time.Second,
			MaxIdleConns:          256,
			Breaker:               defaultBreaker(),
		},
		Ledger: Ledger{
			Backend:           BackendBolt,
			Path:              "./data/ledger.db",
			MaxConns:          10,
			ConnectTimeout:    5 * time.Second,
			Migrate:           true,
			DefaultDemoTokens: 5,
			MaxUnits:          1_000_000,
			DemoRule:          DemoWhole,

			IdempotencyRetention: DefaultIdempotencyRetention,
		},
		Zimmer: Zimmer{Prefixes: []string{"/"}, Deadlines: defaultDeadlines()},
		TLS:    defaultTLS(),
		Egress: defaultEgress(),
	}
}

// defaultProbe is the starting value of each [[app.probe]] entry.
func defaultProbe() Probe {
	return Probe{
		Method:       "GET",
		Every:        10 * time.Second,
		Timeout:      2 * time.Second,
		ExpectStatus: 200,
		PassAfter:    2,
		FailAfter:    3,
		SlowAfter:    time.Second,
		Required:     true,
	}
}

// defaultMeter is the starting value of a route's meter table.
func defaultMeter() Meter {
	return Meter{Units: 1}
}

// Warnings lists legal but risky choices found while loading, such as an
// empty token list. Problem.Line is set as for errors. A Config not made by
// Load or Parse has none.
func (c *Config) Warnings() []Problem {
	return append([]Problem(nil), c.warnings...)
}
