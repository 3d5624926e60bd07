package config

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// TestEnvOverrides checks that variables override the file, with every
// value type converted from text.
func TestEnvOverrides(t *testing.T) {
	t.Parallel()
	doc := base + `
[listen]
public = ":8080"
[[app.probe]]
path = "/healthz"
[[route]]
path = "/a"
[[route]]
path = "/b"
meter = { usage_type = "x", user = "header:X-U" }
`
	c := mustParse(t, doc,
		"ZIMMER_SIDECAR_LISTEN__PUBLIC=:9999",
		"ZIMMER_SIDECAR_LISTEN__MAX_BODY=2MiB",
		"ZIMMER_SIDECAR_LISTEN__MAX_CONNECTIONS=7",
		"ZIMMER_SIDECAR_LISTEN__IDLE_TIMEOUT=5s",
		"ZIMMER_SIDECAR_LOG__ACCESS=false",
		"ZIMMER_SIDECAR_LOG__LEVEL=DEBUG",
		"ZIMMER_SIDECAR_APP__URL=https://127.0.0.1:8443",
		"ZIMMER_SIDECAR_APP__PROBE__0__EVERY=30s",
		"ZIMMER_SIDECAR_ZIMMER__PREFIXES=/api, /api/zimmer/",
		"ZIMMER_SIDECAR_ZIMMER__KB_STATUS__CALL=GET /kb/{user_automation_id}",
		"ZIMMER_SIDECAR_ROUTE__1__PROTECT=true",
		"ZIMMER_SIDECAR_ROUTE__1__METER__UNITS=3",
		EnvConfigPath+"=/etc/zimmer-sidecar.toml",
		"UNRELATED=1",
	)
	checks := []struct {
		name      string
		got, want any
	}{
		{"public", c.Listen.Public, ":9999"},
		{"max_body", c.Listen.MaxBody, 2 * MiB},
		{"max_connections", c.Listen.MaxConnections, 7},
		{"idle_timeout", c.Listen.IdleTimeout, 5 * time.Second},
		{"access", c.Log.Access, false},
		{"level", c.Log.Level.String(), "DEBUG"},
		{"url", c.App.URL.String(), "https://127.0.0.1:8443"},
		{"probe every", c.App.Probes[0].Every, 30 * time.Second},
		{"probe timeout kept", c.App.Probes[0].Timeout, 2 * time.Second},
		{"prefixes", slices.Equal(c.Zimmer.Prefixes, []string{"/api", "/api/zimmer"}), true},
		{"kb_status created", c.Zimmer.KBStatus != nil && c.Zimmer.KBStatus.Call.Method == "GET",
			true},
		{"route 1 protect", c.Routes[1].Protect, true},
		{"route 0 untouched", c.Routes[0].Protect, false},
		{"route 1 units", c.Routes[1].Meter.Units, int64(3)},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s: got %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}

// TestEnvTokensList checks a comma-separated token list from the
// environment, and that an empty value empties a list.
func TestEnvTokensList(t *testing.T) {
	t.Parallel()
	c := mustParse(t, base,
		"ZIMMER_SIDECAR_AUTH__TOKENS=env:A, sha256:"+sha256Hex("b")+",,",
		"A=token-a",
		"ZIMMER_SIDECAR_ZIMMER__SERVICE_URL=",
	)
	if len(c.Auth.Tokens) != 2 || c.Auth.Tokens[0].Value != "token-a" ||
		c.Auth.Tokens[1].Kind != TokenSHA256 {
		t.Errorf("got tokens %v, want env:A and a sha256 digest", c.Auth.Tokens)
	}
	_, err := parse(t, base, []string{"ZIMMER_SIDECAR_ZIMMER__PREFIXES="}, nil)
	ps := problemsOf(t, err)
	if len(ps) != 1 || ps[0].Path != "zimmer.prefixes" {
		t.Errorf("got %v, want zimmer.prefixes to need a prefix", err)
	}
}

// TestEnvProblems checks that a problem in a value from the environment
// names the variable and has no line.
func TestEnvProblems(t *testing.T) {
	t.Parallel()
	doc := base + "[listen]\npublic = \":8080\"\n[[route]]\npath = \"/a\"\n"
	tests := []struct {
		name, env, path, want string
	}{
		{"bad value over a good file value", "ZIMMER_SIDECAR_LISTEN__PUBLIC=8080",
			"listen.public", "must be host:port"},
		{"bad bool", "ZIMMER_SIDECAR_ROUTE__0__PROTECT=maybe",
			"route[0].protect", `must be true or false (got "maybe")`},
		{"bad int", "ZIMMER_SIDECAR_LEDGER__MAX_UNITS=many",
			"ledger.max_units", `must be a whole number (got "many")`},
		{"unknown key", "ZIMMER_SIDECAR_LISTEN__PUBIC=:1",
			"listen.pubic", "did you mean ZIMMER_SIDECAR_LISTEN__PUBLIC?"},
		{"unknown section", "ZIMMER_SIDECAR_LISTN__PUBLIC=:1",
			"listn", "did you mean ZIMMER_SIDECAR_LISTEN?"},
		{"missing entry", "ZIMMER_SIDECAR_ROUTE__3__PROTECT=true",
			"route", "has 1 entries in the file"},
		{"no entries at all", "ZIMMER_SIDECAR_APP__PROBE__0__PATH=/h",
			"app.probe", "the file has no entries here"},
		{"entry without index", "ZIMMER_SIDECAR_ROUTE__PROTECT=true",
			"route", "like ZIMMER_SIDECAR_ROUTE__0__PROTECT"},
		{"whole table", "ZIMMER_SIDECAR_LISTEN=:1",
			"listen", "set its keys one by one, like ZIMMER_SIDECAR_LISTEN__KEY"},
		{"whole array of tables", "ZIMMER_SIDECAR_ROUTE=/x",
			"route", "is a list of tables"},
		{"list entry", "ZIMMER_SIDECAR_ZIMMER__PREFIXES__0=/x",
			"zimmer.prefixes", "comma-separated, with ZIMMER_SIDECAR_ZIMMER__PREFIXES"},
		{"inside a scalar", "ZIMMER_SIDECAR_LISTEN__PUBLIC__HOST=x",
			"listen.public", "is not a table"},
		{"one underscore", "ZIMMER_SIDECAR_LISTEN_PUBLIC=:1",
			"listen_public", "did you mean ZIMMER_SIDECAR_LISTEN__PUBLIC?"},
		{"token list entry", "ZIMMER_SIDECAR_AUTH__TOKENS__0=x",
			"auth.tokens", "comma-separated, with ZIMMER_SIDECAR_AUTH__TOKENS"},
		{"three underscores", "ZIMMER_SIDECAR_LISTEN___PUBLIC=:1",
			"listen._public", "did you mean ZIMMER_SIDECAR_LISTEN__PUBLIC?"},
		{"empty level", "ZIMMER_SIDECAR_LISTEN____PUBLIC=:1",
			"", "exactly two underscores"},
		{"trailing separator", "ZIMMER_SIDECAR_LISTEN__=:1",
			"", "exactly two underscores"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			name, _, _ := strings.Cut(tt.env, "=")
			p := onlyProblem(t, doc, tt.env)
			checkProblem(t, p, tt.path, 0, tt.want)
			if p.Env != name {
				t.Errorf("got Env %q, want %q", p.Env, name)
			}
		})
	}
}
