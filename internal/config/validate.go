package config

import (
	"fmt"
	"maps"
	"net"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

// validator checks a decoded Config. It only reads the Config, except for
// normalising values that have one canonical form (upper-case methods,
// prefixes without a trailing slash, default probe names).
type validator struct {
	problems []Problem
	warnings []Problem
	// readFile reads the files a rule must check (TLS certificates); nil
	// skips those checks.
	readFile func(name string) ([]byte, error)
}

func (v *validator) addf(p, format string, args ...any) {
	v.problems = append(v.problems, Problem{Path: p, Message: fmt.Sprintf(format, args...)})
}

func (v *validator) warnf(p, format string, args ...any) {
	v.warnings = append(v.warnings, Problem{Path: p, Message: fmt.Sprintf(format, args...)})
}

// validate runs every rule, section by section.
func (v *validator) validate(c *Config) {
	if strings.TrimSpace(c.Automation.Version) == "" {
		v.addf("automation.version", "is required: the version /health reports, like \"1.0.0\"")
	}
	if c.Automation.ID < 0 {
		v.addf("automation.id", "must not be negative (got %d)", c.Automation.ID)
	}
	v.listen(&c.Listen)
	v.auth(&c.Auth)
	v.app(&c.App)
	v.breaker(&c.App.Breaker)
	v.ledger(&c.Ledger)
	v.zimmer(&c.Zimmer)
	v.deadlines(&c.Zimmer.Deadlines)
	v.tlsSection(&c.TLS, &c.Listen)
	v.routes(c.Routes, c.Ledger.MaxUnits)
	v.platformURL(c.Automation.PlatformURL)
	v.egress(c)
}

// positive checks that a duration is above zero.
func (v *validator) positive(p string, d time.Duration) {
	if d <= 0 {
		v.addf(p, "must be a positive duration (got %q)", d.String())
	}
}

// atLeast checks an integer's lower bound.
func (v *validator) atLeast(p string, n, low int64) {
	if n < low {
		v.addf(p, "must be at least %d (got %d)", low, n)
	}
}

func (v *validator) listen(l *Listen) {
	if l.Public == "" {
		v.addf("listen.public", `is required, like ":8080"`)
	} else {
		v.hostPort("listen.public", l.Public)
	}
	if l.Admin != "" && v.hostPort("listen.admin", l.Admin) {
		if sameListener(l.Public, l.Admin) {
			v.addf("listen.admin", "must differ from listen.public (both %q)", l.Admin)
		}
		if host, _, _ := net.SplitHostPort(l.Admin); !isLoopback(host) {
			v.warnf("listen.admin", "%q is not a loopback address: the ledger admin "+
				"API will be reachable from the network", l.Admin)
		}
	}
	v.atLeast("listen.max_connections", int64(l.MaxConnections), 0)
	v.positive("listen.read_header_timeout", l.ReadHeaderTimeout)
	v.positive("listen.idle_timeout", l.IdleTimeout)
	v.positive("listen.shutdown_grace", l.ShutdownGrace)
	if l.ShutdownDelay < 0 {
		v.addf("listen.shutdown_delay", "must not be negative (got %s)", l.ShutdownDelay)
	}
	v.atLeast("listen.max_header_bytes", int64(l.MaxHeaderBytes), 1)
	v.atLeast("listen.max_body", int64(l.MaxBody), 1)
	v.atLeast("listen.requests_per_second", int64(l.RequestsPerSecond), 0)
	v.atLeast("listen.burst", int64(l.Burst), 0)
}

// hostPort checks a listen address and reports whether it is valid.
func (v *validator) hostPort(p, addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.addf(p, `must be host:port, like ":8080" or "127.0.0.1:9090" (got %q)`, addr)
		return false
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		v.addf(p, "has an invalid port %q: use a number from 0 to 65535", port)
		return false
	}
	if strings.ContainsAny(host, " /") {
		v.addf(p, "has an invalid host %q", host)
		return false
	}
	return true
}

// sameListener reports whether two valid addresses would bind the same
// port on overlapping interfaces.
func sameListener(a, b string) bool {
	ha, pa, errA := net.SplitHostPort(a)
	hb, pb, errB := net.SplitHostPort(b)
	if errA != nil || errB != nil || pa != pb || pa == "0" {
		return false
	}
	wild := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return ha == hb || wild(ha) || wild(hb)
}

// isLoopback reports whether a listen host only accepts local connections.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (v *validator) auth(a *Auth) {
	v.atLeast("auth.failures_per_minute", int64(a.FailuresPerMinute), 0)
	v.atLeast("auth.bcrypt_cache_size", int64(a.BcryptCacheSize), 0)
	if len(a.Tokens) == 0 {
		v.warnf("auth.tokens", "no service token is configured: every protected "+
			"request (Zimmer endpoints and routes with protect = true) will be denied")
	}
	for i, t := range a.Tokens {
		if t.Kind == TokenPlain && strings.HasSuffix(t.Source, " (inline)") {
			v.warnf(joinIndex("auth.tokens", i), "is a plaintext token written in "+
				`the file: prefer "env:NAME", "file:/path" or a "sha256:" digest`)
		}
	}
}

func (v *validator) app(a *App) {
	v.appURL(a.URL)
	v.positive("app.connect_timeout", a.ConnectTimeout)
	v.positive("app.response_header_timeout", a.ResponseHeaderTimeout)
	v.atLeast("app.max_idle_conns", int64(a.MaxIdleConns), 0)

	names := map[string]int{}
	for i := range a.Probes {
		pr := &a.Probes[i]
		p := joinIndex("app.probe", i)
		v.probe(p, pr)
		if first, dup := names[pr.Name]; dup && pr.Name != "" {
			v.addf(p+".name", "%q is already the name of app.probe[%d]; give each "+
				"probe its own name", pr.Name, first)
			continue
		}
		names[pr.Name] = i
	}
}

// appURL checks the app's base URL. It never prints the URL: it may hold
// a password.
func (v *validator) appURL(u *url.URL) {
	const p = "app.url"
	switch {
	case u == nil || u.String() == "":
		v.addf(p, `is required, like "http://127.0.0.1:8000"`)
	case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
		v.addf(p, `must be an absolute http:// or https:// URL, like "http://127.0.0.1:8000"`)
	case u.User != nil:
		v.addf(p, "must not contain a user name or password")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		v.addf(p, "must not have a query or a fragment")
	}
}

// ReservedCheckName is the /health check the app's circuit breaker
// registers; no probe may take it.
const ReservedCheckName = "app_breaker"

func (v *validator) probe(p string, pr *Probe) {
	if !strings.HasPrefix(pr.Path, "/") {
		v.addf(p+".path", `must start with "/" (got %q)`, pr.Path)
	}
	if pr.Name == "" {
		pr.Name = pr.Path
	}
	if pr.Name == ReservedCheckName {
		v.addf(p+".name", "%q is the circuit breaker's check in /health; "+
			"choose another name", pr.Name)
	}
	if m, ok := normMethod(pr.Method); ok {
		pr.Method = m
	} else {
		v.addf(p+".method", "must be one of %s (got %q)", strings.Join(methods, ", "), pr.Method)
	}
	v.positive(p+".every", pr.Every)
	v.positive(p+".timeout", pr.Timeout)
	if pr.Timeout > 0 && pr.Every > 0 && pr.Timeout >= pr.Every {
		v.addf(p+".timeout", "must be shorter than every (%s), got %s", pr.Every, pr.Timeout)
	}
	if pr.ExpectStatus < 100 || pr.ExpectStatus > 599 {
		v.addf(p+".expect_status", "must be an HTTP status from 100 to 599 (got %d)",
			pr.ExpectStatus)
	}
	v.atLeast(p+".pass_after", int64(pr.PassAfter), 1)
	v.atLeast(p+".fail_after", int64(pr.FailAfter), 1)
	if pr.SlowAfter < 0 {
		v.addf(p+".slow_after", "must not be negative (got %s)", pr.SlowAfter)
	}
}

// backends validates the keys each ledger backend needs. A new backend
// adds its keys to Ledger and its check here.
var backends = map[string]func(v *validator, l *Ledger){
	BackendBolt: func(v *validator, l *Ledger) {
		if strings.TrimSpace(l.Path) == "" {
			v.addf("ledger.path", `is required by the bolt backend, like "./data/ledger.db"`)
		}
	},
	BackendPostgres: func(v *validator, l *Ledger) {
		switch {
		case l.DSN.Value == "":
			v.addf("ledger.dsn", "is required by the postgres backend: a secret "+
				`reference like "env:ZIMMER_LEDGER_DSN" or "file:/run/secrets/ledger-dsn"`)
		case !looksLikeDSN(l.DSN.Value):
			v.addf("ledger.dsn", "the value of %s is not a PostgreSQL connection "+
				`string: want a "postgres://" URL or key=value pairs (the value `+
				"is not shown)", l.DSN.Source)
		}
	},
}

// maxLedgerConns bounds ledger.max_conns far above any useful pool (a
// server allows 100 connections by default).
const maxLedgerConns = 10_000

// looksLikeDSN is a shape check only (the driver parses the DSN when the
// ledger opens): a postgres URL, or key=value pairs.
func looksLikeDSN(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://") ||
		(strings.Contains(s, "=") && !strings.Contains(s, "://"))
}

func (v *validator) ledger(l *Ledger) {
	if check, ok := backends[l.Backend]; ok {
		check(v, l)
	} else {
		v.addf("ledger.backend", `must be "bolt" or "postgres" (got %q)`, l.Backend)
	}
	v.atLeast("ledger.default_demo_tokens", l.DefaultDemoTokens, 0)
	v.atLeast("ledger.max_units", l.MaxUnits, 1)
	if l.DemoRule != DemoWhole && l.DemoRule != DemoSpill {
		v.addf("ledger.demo_rule", `must be "whole" or "spill" (got %q)`, l.DemoRule)
	}
	v.atLeast("ledger.max_conns", int64(l.MaxConns), 1)
	if l.MaxConns > maxLedgerConns {
		v.addf("ledger.max_conns", "must be at most %d (got %d)", maxLedgerConns, l.MaxConns)
	}
	v.positive("ledger.connect_timeout", l.ConnectTimeout)
	if r := l.IdempotencyRetention; r != 0 && r < MinIdempotencyRetention {
		v.addf("ledger.idempotency_retention", "must be 0 (keep forever) or at least %s "+
			"(got %s)", MinIdempotencyRetention, r)
	}
}

func (v *validator) zimmer(z *Zimmer) {
	v.prefixes(z)
	if z.ServiceURL != "" {
		v.serviceURL(z.ServiceURL)
	}
	if z.Provision != nil {
		v.call("zimmer.provision", z.Provision.Call)
		v.body("zimmer.provision.body", z.Provision.Body)
		v.extract("zimmer.provision.service_url", z.Provision.ServiceURL)
		v.extract("zimmer.provision.integration_status", z.Provision.IntegrationStatus)
		v.extract("zimmer.provision.message", z.Provision.Message)
	}
	if s := z.KBStatus; s != nil {
		v.call("zimmer.kb_status", s.Call)
		v.body("zimmer.kb_status.body", s.Body)
		v.extract("zimmer.kb_status.total_documents", s.TotalDocuments)
		v.extract("zimmer.kb_status.last_updated", s.LastUpdated)
		v.extract("zimmer.kb_status.error_logs", s.ErrorLogs)
		v.extract("zimmer.kb_status.backup_status", s.BackupStatus)
		v.extract("zimmer.kb_status.state", s.State)
		v.stateValues(s.State)
	}
	if z.KBReset != nil {
		if z.KBStatus == nil {
			v.addf("zimmer.kb_reset", "needs [zimmer.kb_status]: the platform only "+
				"offers a reset for a knowledge base whose status it can read")
		}
		v.call("zimmer.kb_reset", z.KBReset.Call)
		v.body("zimmer.kb_reset.body", z.KBReset.Body)
	}
}

// prefixes checks and normalises zimmer.prefixes.
func (v *validator) prefixes(z *Zimmer) {
	if len(z.Prefixes) == 0 {
		v.addf("zimmer.prefixes", `needs at least one prefix, like ["/"]`)
	}
	seen := map[string]int{}
	for i, pre := range z.Prefixes {
		p := joinIndex("zimmer.prefixes", i)
		norm := pre
		if norm != "/" {
			norm = strings.TrimSuffix(pre, "/")
		}
		switch {
		case !strings.HasPrefix(pre, "/"):
			v.addf(p, `must start with "/" (got %q)`, pre)
			continue
		case strings.ContainsAny(norm, "?#*{}") || path.Clean(norm) != norm:
			v.addf(p, `must be a clean path like "/api/zimmer" (got %q)`, pre)
			continue
		}
		if first, dup := seen[norm]; dup {
			v.addf(p, "%q repeats zimmer.prefixes[%d]", pre, first)
			continue
		}
		seen[norm] = i
		z.Prefixes[i] = norm
	}
}

// serviceURL checks that the template yields an absolute http(s) URL.
func (v *validator) serviceURL(s string) {
	const p = "zimmer.service_url"
	if err := checkTemplate(s, templateFields); err != nil {
		v.addf(p, "%v", err)
		return
	}
	u, err := url.Parse(fillTemplate(s, "1"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.addf(p, `must be an absolute http:// or https:// URL, like `+
			`"https://app.example/u/{user_automation_id}" (got %q)`, s)
	}
}

// call checks a hook's call; section is the hook's table.
func (v *validator) call(section string, c Call) {
	p := section + ".call"
	if c.IsZero() {
		v.addf(p, `is required, like "POST /internal/tenants"`)
		return
	}
	if err := checkTemplate(c.Path, templateFields); err != nil {
		v.addf(p, "%v", err)
	}
}

// body checks the templates in every string of a hook body.
func (v *validator) body(p string, b any) {
	switch t := b.(type) {
	case string:
		if err := checkTemplate(t, templateFields); err != nil {
			v.addf(p, "%v", err)
		}
	case map[string]any:
		for _, k := range sortedKeys(t) {
			v.body(joinKey(p, k), t[k])
		}
	case []any:
		for i, e := range t {
			v.body(joinIndex(p, i), e)
		}
	}
}

// extract checks an answer field's dot path.
func (v *validator) extract(p string, e Extract) {
	if e.IsZero() {
		return
	}
	if e.From == "" {
		v.addf(joinKey(p, "from"), `is required: the dot path of the value in the `+
			`app's answer, like "summary.count"`)
		return
	}
	if slices.Contains(strings.Split(e.From, "."), "") {
		v.addf(p, `must be a dot path like "summary.count" or "items.0.id" (got %q)`, e.From)
	}
}

// kbStates are the values a KB state extract must yield.
var kbStates = []string{"empty", "ready", "processing", "error"}

// stateValues checks that the state's map and default produce KB states.
func (v *validator) stateValues(e Extract) {
	const p = "zimmer.kb_status.state"
	for _, k := range slices.Sorted(maps.Keys(e.Map)) {
		if !slices.Contains(kbStates, e.Map[k]) {
			v.addf(joinKey(joinKey(p, "map"), k), "must be one of %s (got %q)",
				quoteList(kbStates), e.Map[k])
		}
	}
	if e.Default == nil {
		return
	}
	if s, ok := e.Default.(string); !ok || !slices.Contains(kbStates, s) {
		v.addf(p+".default", "must be one of %s (got %v)", quoteList(kbStates), e.Default)
	}
}

func (v *validator) routes(rs []Route, maxUnits int64) {
	for i := range rs {
		r := &rs[i]
		p := joinIndex("route", i)
		params, err := routeParams(r.Path)
		if err != nil {
			v.addf(p+".path", "%v", err)
		}
		for j, m := range r.Methods {
			if u, ok := normMethod(m); ok {
				r.Methods[j] = u
			} else {
				v.addf(joinIndex(p+".methods", j), "must be one of %s (got %q)",
					strings.Join(methods, ", "), m)
			}
		}
		if r.Meter != nil {
			v.meter(p+".meter", r.Meter, params, err == nil, maxUnits)
			if !r.Protect {
				v.warnf(p, "is metered but not protected: any client that reaches the "+
					"sidecar can spend any user's tokens by naming that user")
			}
		}
		for j := range i {
			if rs[j].Path == r.Path && methodsOverlap(rs[j].Methods, r.Methods) {
				v.addf(p+".path", "%q with these methods is already route[%d]", r.Path, j)
				break
			}
		}
	}
}

func (v *validator) meter(p string, m *Meter, params []string, pathOK bool, maxUnits int64) {
	v.atLeast(p+".units", m.Units, 1)
	if maxUnits >= 1 && m.Units > maxUnits {
		v.addf(p+".units", "must not exceed ledger.max_units (%d), got %d", maxUnits, m.Units)
	}
	if strings.TrimSpace(m.UsageType) == "" {
		v.addf(p+".usage_type", `is required: the usage type recorded with each `+
			`charge, like "chat_session"`)
	}
	switch {
	case m.User.Source == "":
		v.addf(p+".user", `is required: where the request names its user, like `+
			`"header:X-Tenant", "query:tenant" or "path:id"`)
	case m.User.Source == UserFromPath && pathOK && !slices.Contains(params, m.User.Name):
		v.addf(p+".user", "names path parameter %q, but the route path has %s",
			m.User.Name, paramList(params))
	}
}

// paramList describes a route's parameters for a message.
func paramList(params []string) string {
	if len(params) == 0 {
		return "no parameters"
	}
	return "only " + quoteList(params)
}

// methodsOverlap reports whether two method lists match a common method;
// an empty list matches all.
func methodsOverlap(a, b []string) bool {
	if len(a) == 0 || len(b) == 0 {
		return true
	}
	for _, m := range a {
		if slices.Contains(b, m) {
			return true
		}
	}
	return false
}

// routeParams checks a route path and returns its parameter names. Paths
// are exact ("/x"), prefixes ("/x/*", "/*") or hold whole-segment
// parameters ("/x/{id}").
func routeParams(p string) ([]string, error) {
	if !strings.HasPrefix(p, "/") {
		return nil, fmt.Errorf(`must start with "/" (got %q)`, p)
	}
	if strings.ContainsAny(p, "?#") {
		return nil, fmt.Errorf("must not contain a query or fragment (got %q)", p)
	}
	base := strings.TrimSuffix(p, "/*")
	if base == "" {
		base = "/"
	}
	if path.Clean(base) != base {
		return nil, fmt.Errorf(`must be a clean path without "//", "." or ".." `+
			`segments or a trailing "/" (got %q; try %q)`, p, path.Clean(base))
	}
	var params []string
	for seg := range strings.SplitSeq(strings.TrimPrefix(base, "/"), "/") {
		if strings.Contains(seg, "*") {
			return nil, fmt.Errorf(`may only end in "/*" for a prefix, like "/x/*" (got %q)`, p)
		}
		if !strings.ContainsAny(seg, "{}") {
			continue
		}
		name, ok := strings.CutPrefix(seg, "{")
		name, ok2 := strings.CutSuffix(name, "}")
		if !ok || !ok2 || !isIdent(name) {
			return nil, fmt.Errorf(`has a bad parameter %q: a parameter is a whole `+
				`segment like "{id}" (got %q)`, seg, p)
		}
		if slices.Contains(params, name) {
			return nil, fmt.Errorf("repeats parameter {%s} (got %q)", name, p)
		}
		params = append(params, name)
	}
	return params, nil
}

// isIdent reports whether s is a letter or underscore followed by
// letters, digits or underscores.
func isIdent(s string) bool {
	for i, r := range s {
		letter := r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
		if !letter && (i == 0 || r < '0' || r > '9') {
			return false
		}
	}
	return s != ""
}

// checkTemplate checks that every {name} in s names one of fields and that
// braces are balanced.
func checkTemplate(s string, fields []string) error {
	rest := s
	for {
		open := strings.IndexAny(rest, "{}")
		if open < 0 {
			return nil
		}
		if rest[open] == '}' {
			return fmt.Errorf(`has a "}" without "{" (got %q)`, s)
		}
		end := strings.IndexAny(rest[open+1:], "{}")
		if end < 0 || rest[open+1+end] == '{' {
			return fmt.Errorf(`has a "{" without "}" (got %q)`, s)
		}
		name := rest[open+1 : open+1+end]
		if !slices.Contains(fields, name) {
			msg := fmt.Sprintf("uses unknown field {%s}; known fields: %s", name,
				strings.Join(fields, ", "))
			if near := suggest(name, fields); near != "" {
				msg = fmt.Sprintf("uses unknown field {%s}; did you mean {%s}?", name, near)
			}
			return fmt.Errorf("%s", msg)
		}
		rest = rest[open+end+2:]
	}
}

// fillTemplate replaces every {name} in s with value.
func fillTemplate(s, value string) string {
	var b strings.Builder
	for {
		open := strings.IndexByte(s, '{')
		end := strings.IndexByte(s, '}')
		if open < 0 || end < open {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:open] + value)
		s = s[end+1:]
	}
}

func quoteList(xs []string) string {
	q := make([]string, len(xs))
	for i, x := range xs {
		q[i] = strconv.Quote(x)
	}
	return strings.Join(q, ", ")
}
