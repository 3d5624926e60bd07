package config

import (
	"net"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Egress key sources.
const (
	// KeysStatic uses the keys listed in egress.keys.
	KeysStatic = "static"
	// KeysPlatform leases keys from the platform (automation.platform_url).
	KeysPlatform = "platform"
)

// Egress auth styles: how the key is sent upstream.
const (
	// AuthBearer sends "Authorization: Bearer <key>" (OpenAI).
	AuthBearer = "bearer"
	// AuthAPIKey sends "api-key: <key>" (Azure OpenAI).
	AuthAPIKey = "api-key"
)

// DefaultUpstream is the default egress upstream: the public OpenAI API.
const DefaultUpstream = "https://api.openai.com"

// Egress configures the app's outbound OpenAI calls through the sidecar.
type Egress struct {
	// Listen is the host:port of the base-URL listener, on loopback: the
	// app sets its OpenAI base URL to http://{Listen}/v1. Empty with
	// Proxy.Listen empty turns the egress off.
	Listen string `toml:"listen"`
	// Upstream is the OpenAI-compatible API the calls go to: scheme, host
	// and an optional path prefix. Only its host is ever contacted.
	Upstream *url.URL `toml:"upstream"`
	// AuthStyle is AuthBearer or AuthAPIKey.
	AuthStyle string `toml:"auth_style"`
	// KeySource is KeysStatic or KeysPlatform.
	KeySource string `toml:"key_source"`
	// Keys are the static keys, as secret references; a "file:" reference
	// may hold several keys, one per line (blank lines and lines starting
	// with "#" are skipped).
	Keys []Secret `toml:"keys"`
	// RPMLimit and DailyTokenLimit are each static key's local limits; 0
	// is unlimited. Leased keys take theirs from the lease.
	RPMLimit        int   `toml:"rpm_limit"`
	DailyTokenLimit int64 `toml:"daily_token_limit"`
	// LeaseModel and LeaseMaxTokens are sent when asking the platform for a
	// lease and no request names them.
	LeaseModel     string `toml:"lease_model"`
	LeaseMaxTokens int64  `toml:"lease_max_tokens"`
	// UserHeader names the header in which the app names the
	// user_automation_id an egress call is charged to. The sidecar removes
	// it before the call goes upstream.
	UserHeader string `toml:"user_header"`
	// MaxBody bounds an egress request body.
	MaxBody Size `toml:"max_body"`
	// CallTimeout bounds one upstream call, stream included.
	CallTimeout time.Duration `toml:"call_timeout"`
	// BodyTimeout bounds reading an egress request's body from the app.
	BodyTimeout time.Duration `toml:"body_timeout"`
	// DrainTimeout and DrainBytes bound how long and how much the sidecar
	// keeps reading a stream after the app went away, to read its usage.
	DrainTimeout time.Duration `toml:"drain_timeout"`
	DrainBytes   Size          `toml:"drain_bytes"`
	// ReportUsage sends each leased key's usage to the platform's
	// openai-usage endpoint, through the outbox.
	ReportUsage bool `toml:"report_usage"`

	// Proxy is the forward-proxy mode.
	Proxy EgressProxy `toml:"proxy"`
	// Budget charges egress tokens to users' balances.
	Budget EgressBudget `toml:"budget"`
	// Outbox holds usage deliveries to the platform until they succeed.
	Outbox EgressOutbox `toml:"outbox"`
}

// Enabled reports whether any egress listener is configured.
func (e *Egress) Enabled() bool { return e.Listen != "" || e.Proxy.Listen != "" }

// EgressProxy configures the forward-proxy mode, for apps whose OpenAI URL
// cannot be changed: they use the sidecar as HTTPS_PROXY.
type EgressProxy struct {
	// Listen is the host:port of the proxy listener, on loopback; empty
	// runs none.
	Listen string `toml:"listen"`
	// Intercept are the hosts whose CONNECT is decrypted with a
	// certificate from the local CA and served by the egress (key
	// injected, usage metered). Their calls go to egress.upstream.
	Intercept []string `toml:"intercept"`
	// Tunnel are hosts whose CONNECT is passed through unchanged; every
	// other host is refused.
	Tunnel []string `toml:"tunnel"`
	// CACert and CAKey are the local CA's PEM files: used when both exist,
	// created otherwise. The app trusts CACert (SSL_CERT_FILE,
	// REQUESTS_CA_BUNDLE, NODE_EXTRA_CA_CERTS).
	CACert string `toml:"ca_cert"`
	CAKey  string `toml:"ca_key"`
}

// EgressBudget configures per-user LLM budgets.
type EgressBudget struct {
	// Enabled charges calls that name a user to that user's balance.
	Enabled bool `toml:"enabled"`
	// TokensPerUnit converts tokens to units, rounding up (>= 1).
	TokensPerUnit int64 `toml:"tokens_per_unit"`
	// ReserveTokens is the completion allowance reserved for a call whose
	// request sets no max_tokens.
	ReserveTokens int64 `toml:"reserve_tokens"`
	// RequireUser refuses calls that name no user (400).
	RequireUser bool `toml:"require_user"`
	// PlatformLedger also forwards each call's units to the platform's
	// POST /api/automation-usage/consume, and updates the local balances
	// from its answer.
	PlatformLedger bool `toml:"platform_ledger"`
	// UsageType is the usage_type sent to the platform's ledger.
	UsageType string `toml:"usage_type"`
}

// EgressOutbox configures the durable outbox of platform deliveries.
type EgressOutbox struct {
	// Path is the outbox database file with the bolt ledger; with the
	// postgres ledger the outbox is a table of that database.
	Path string `toml:"path"`
	// MaxItems bounds the backlog; egress calls are refused (503) while
	// it is full, since their usage could not be recorded.
	MaxItems int `toml:"max_items"`
}

// defaultEgress is the starting value of the [egress] section.
func defaultEgress() Egress {
	return Egress{
		Upstream:       mustURL(DefaultUpstream),
		AuthStyle:      AuthBearer,
		KeySource:      KeysStatic,
		Keys:           []Secret{},
		LeaseModel:     "gpt-4o-mini",
		LeaseMaxTokens: 4096,
		UserHeader:     "X-Zimmer-User-Automation-Id",
		MaxBody:        4 * MiB,
		CallTimeout:    10 * time.Minute,
		BodyTimeout:    time.Minute,
		DrainTimeout:   30 * time.Second,
		DrainBytes:     8 * MiB,
		ReportUsage:    true,
		Proxy: EgressProxy{
			Intercept: []string{"api.openai.com"},
			Tunnel:    []string{},
			CACert:    "./data/egress-ca.pem",
			CAKey:     "./data/egress-ca.key",
		},
		Budget: EgressBudget{
			TokensPerUnit: 1000,
			ReserveTokens: 4096,
			UsageType:     "openai_tokens",
		},
		Outbox: EgressOutbox{Path: "./data/egress-outbox.db", MaxItems: 100_000},
	}
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

// egress checks the [egress] section; it checks nothing when the egress is
// off. c is the whole, already-decoded config.
func (v *validator) egress(c *Config) {
	e := &c.Egress
	if !e.Enabled() {
		return
	}
	for _, l := range []struct{ key, addr string }{
		{"egress.listen", e.Listen}, {"egress.proxy.listen", e.Proxy.Listen},
	} {
		if l.addr == "" || !v.hostPort(l.key, l.addr) {
			continue
		}
		if host, _, _ := net.SplitHostPort(l.addr); !isLoopback(host) {
			v.addf(l.key, "must be a loopback address like \"127.0.0.1:8081\": the "+
				"egress spends keys for whoever reaches it (got %q)", l.addr)
		}
		for _, other := range []struct{ key, addr string }{
			{"listen.public", c.Listen.Public}, {"listen.admin", c.Listen.Admin},
			{"tls.http", c.TLS.HTTP},
		} {
			if other.addr != "" && sameListener(l.addr, other.addr) {
				v.addf(l.key, "must differ from %s (both %q)", other.key, l.addr)
			}
		}
	}
	if e.Listen != "" && e.Proxy.Listen != "" && sameListener(e.Listen, e.Proxy.Listen) {
		v.addf("egress.proxy.listen", "must differ from egress.listen (both %q)", e.Listen)
	}
	v.upstream(e.Upstream)
	if e.AuthStyle != AuthBearer && e.AuthStyle != AuthAPIKey {
		v.addf("egress.auth_style", `must be "bearer" or "api-key" (got %q)`, e.AuthStyle)
	}
	switch e.KeySource {
	case KeysStatic:
		if len(e.Keys) == 0 {
			v.addf("egress.keys", `needs at least one key with key_source "static", `+
				`like ["env:OPENAI_API_KEY"]`)
		}
	case KeysPlatform:
		v.needPlatform(c, `egress.key_source "platform"`)
		if strings.TrimSpace(e.LeaseModel) == "" {
			v.addf("egress.lease_model", "must name the model asked for in leases")
		}
		v.atLeast("egress.lease_max_tokens", e.LeaseMaxTokens, 1)
	default:
		v.addf("egress.key_source", `must be "static" or "platform" (got %q)`, e.KeySource)
	}
	v.atLeast("egress.rpm_limit", int64(e.RPMLimit), 0)
	v.atLeast("egress.daily_token_limit", e.DailyTokenLimit, 0)
	if !validHeaderName(e.UserHeader) {
		v.addf("egress.user_header", "must be a header name like %q (got %q)",
			"X-Zimmer-User-Automation-Id", e.UserHeader)
	}
	v.atLeast("egress.max_body", int64(e.MaxBody), 1)
	v.positive("egress.call_timeout", e.CallTimeout)
	v.positive("egress.body_timeout", e.BodyTimeout)
	if r := c.Ledger.IdempotencyRetention; r > 0 && e.CallTimeout+e.DrainTimeout >= r {
		// A reservation's record must outlive its call, or its
		// settlement finds nothing and the user stays charged the hold.
		v.addf("egress.call_timeout", "plus egress.drain_timeout must be shorter than "+
			"ledger.idempotency_retention (%s + %s >= %s)", e.CallTimeout, e.DrainTimeout, r)
	}
	v.positive("egress.drain_timeout", e.DrainTimeout)
	v.atLeast("egress.drain_bytes", int64(e.DrainBytes), 1)
	v.egressProxy(&e.Proxy)
	v.egressBudget(c)
	if c.Ledger.Backend == BackendBolt && strings.TrimSpace(e.Outbox.Path) == "" {
		v.addf("egress.outbox.path", "is required with the bolt ledger, like %q",
			"/var/lib/zimmer-sidecar/egress-outbox.db")
	}
	if c.Ledger.Backend == BackendBolt && e.Outbox.Path == c.Ledger.Path {
		v.addf("egress.outbox.path", "must differ from ledger.path (both %q)", e.Outbox.Path)
	}
	v.atLeast("egress.outbox.max_items", int64(e.Outbox.MaxItems), 1)
}

// upstream checks egress.upstream.
func (v *validator) upstream(u *url.URL) {
	const p = "egress.upstream"
	switch {
	case u == nil || u.String() == "":
		v.addf(p, "is required, like %q", DefaultUpstream)
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
		v.addf(p, "must be an absolute http:// or https:// URL like %q", DefaultUpstream)
	case u.User != nil:
		v.addf(p, "must not carry credentials: keys come from egress.keys or the platform")
	case u.RawQuery != "" || u.Fragment != "":
		v.addf(p, "must not have a query or a fragment")
	}
}

// needPlatform reports what a feature needs to reach the platform.
func (v *validator) needPlatform(c *Config, what string) {
	if c.Automation.PlatformURL == nil || c.Automation.PlatformURL.String() == "" {
		v.addf("automation.platform_url", "is required by %s, like %q", what,
			"https://platform.example")
	}
	if c.Automation.ID <= 0 {
		v.addf("automation.id", "is required by %s: the platform's automation id", what)
	}
	if c.Automation.PlatformToken.Value == "" && c.firstPlainToken() == "" {
		v.addf("automation.platform_token", "is required by %s (auth.tokens holds no "+
			"plain token to send the platform), like %q", what, "env:ZIMMER_SERVICE_TOKEN")
	}
}

// egressProxy checks [egress.proxy] when its listener is set.
func (v *validator) egressProxy(p *EgressProxy) {
	if p.Listen == "" {
		return
	}
	if len(p.Intercept) == 0 {
		v.addf("egress.proxy.intercept", `needs at least one host, like ["api.openai.com"]`)
	}
	hosts := map[string]string{}
	for _, l := range []struct {
		key  string
		list []string
	}{{"egress.proxy.intercept", p.Intercept}, {"egress.proxy.tunnel", p.Tunnel}} {
		key := l.key
		for i, h := range l.list {
			ip := joinIndex(key, i)
			if msg := checkProxyHost(h); msg != "" {
				v.addf(ip, "%s (got %q)", msg, h)
				continue
			}
			if prev, dup := hosts[strings.ToLower(h)]; dup {
				v.addf(ip, "%q is already listed at %s", h, prev)
				continue
			}
			hosts[strings.ToLower(h)] = ip
		}
	}
	if strings.TrimSpace(p.CACert) == "" || strings.TrimSpace(p.CAKey) == "" {
		v.addf("egress.proxy.ca_cert", "and egress.proxy.ca_key are required: the "+
			"local CA's files, created when missing")
	} else if p.CACert == p.CAKey {
		v.addf("egress.proxy.ca_key", "must differ from egress.proxy.ca_cert")
	}
}

// checkProxyHost explains what is wrong with an intercept or tunnel
// entry: a DNS name or an IP address, with an optional port.
func checkProxyHost(h string) string {
	host := h
	if hh, port, err := net.SplitHostPort(h); err == nil {
		if port == "" {
			return "has an empty port"
		}
		host = hh
	}
	if net.ParseIP(host) != nil {
		return ""
	}
	if strings.HasPrefix(host, "*") {
		return "must be an exact host name: wildcards would make the proxy open"
	}
	return checkDNSName(host)
}

// egressBudget checks [egress.budget].
func (v *validator) egressBudget(c *Config) {
	b := &c.Egress.Budget
	if !b.Enabled {
		if b.RequireUser || b.PlatformLedger {
			v.addf("egress.budget.enabled", "must be true for require_user or "+
				"platform_ledger to have an effect")
		}
		return
	}
	v.atLeast("egress.budget.tokens_per_unit", b.TokensPerUnit, 1)
	v.atLeast("egress.budget.reserve_tokens", b.ReserveTokens, 1)
	if strings.TrimSpace(b.UsageType) == "" {
		v.addf("egress.budget.usage_type", "must not be empty")
	}
	if b.PlatformLedger {
		v.needPlatform(c, "egress.budget.platform_ledger")
	}
}

// firstPlainToken returns the first auth token stored as plain text, the
// one sent to the platform when automation.platform_token is unset ("" if
// none: hashed tokens cannot be sent).
func (c *Config) firstPlainToken() string {
	i := slices.IndexFunc(c.Auth.Tokens, func(t Token) bool { return t.Kind == TokenPlain })
	if i < 0 {
		return ""
	}
	return c.Auth.Tokens[i].Value
}

// PlatformToken returns the service token the sidecar sends to the
// platform: automation.platform_token, else the first plain auth token.
func (c *Config) PlatformToken() string {
	if c.Automation.PlatformToken.Value != "" {
		return c.Automation.PlatformToken.Value
	}
	return c.firstPlainToken()
}

// platformURL checks automation.platform_url when it is set.
func (v *validator) platformURL(u *url.URL) {
	const p = "automation.platform_url"
	switch {
	case u == nil || u.String() == "":
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
		v.addf(p, "must be an absolute http:// or https:// URL like %q",
			"https://platform.example")
	case u.User != nil:
		v.addf(p, "must not carry credentials: the service token is sent as a header")
	case u.RawQuery != "" || u.Fragment != "":
		v.addf(p, "must not have a query or a fragment")
	}
}
