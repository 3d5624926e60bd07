package config

import (
	"strings"
	"testing"
)

// TestEgressOffByDefault: a config without [egress] has no egress and
// raises no egress problem.
func TestEgressOffByDefault(t *testing.T) {
	t.Parallel()
	c := mustParse(t, base)
	if c.Egress.Enabled() {
		t.Fatal("egress enabled by default")
	}
	if got := c.Egress.Upstream.String(); got != DefaultUpstream {
		t.Errorf("default upstream %q, want %q", got, DefaultUpstream)
	}
}

// TestEgressRules checks each [egress] rule on its own: the one problem it
// raises, at its key path and line.
func TestEgressRules(t *testing.T) {
	t.Parallel()
	const on = "[egress]\nlisten = \"127.0.0.1:8081\"\nkeys = [\"sk-inline-test-key\"]\n"
	tests := []struct {
		name string
		doc  string // a whole document
		path string
		line int
		want string
	}{
		{"not loopback", base + "[egress]\nlisten = \":8081\"\nkeys = [\"k\"]\n",
			"egress.listen", 4, "must be a loopback address"},
		{"same as admin", base + "[egress]\nlisten = \"127.0.0.1:9090\"\nkeys = [\"k\"]\n",
			"egress.listen", 4, "must differ from listen.admin"},
		{"no keys", base + "[egress]\nlisten = \"127.0.0.1:8081\"\n",
			"egress.keys", 3, "needs at least one key"},
		{"bad key source", base + on + "key_source = \"vault\"\n",
			"egress.key_source", 6, `must be "static" or "platform"`},
		{"bad auth style", base + on + "auth_style = \"basic\"\n",
			"egress.auth_style", 6, `must be "bearer" or "api-key"`},
		{"upstream not absolute", base + on + "upstream = \"api.openai.com\"\n",
			"egress.upstream", 6, "absolute http:// or https:// URL"},
		{"upstream credentials", base + on + "upstream = \"https://u:p@x.example\"\n",
			"egress.upstream", 6, "must not carry credentials"},
		{"platform needs url", "[automation]\nversion = \"1\"\nid = 3\n" +
			"platform_token = \"t\"\n[egress]\nlisten = \"127.0.0.1:8081\"\n" +
			"key_source = \"platform\"\n",
			"automation.platform_url", 1, "is required by egress.key_source"},
		{"negative rpm", base + on + "rpm_limit = -1\n",
			"egress.rpm_limit", 6, "at least 0"},
		{"bad user header", base + on + "user_header = \"x user\"\n",
			"egress.user_header", 6, "must be a header name"},
		{"wildcard intercept", base + on + "[egress.proxy]\nlisten = \"127.0.0.1:3128\"\n" +
			"intercept = [\"*.openai.com\"]\n",
			"egress.proxy.intercept[0]", 8, "wildcards would make the proxy open"},
		{"host listed twice", base + on + "[egress.proxy]\nlisten = \"127.0.0.1:3128\"\n" +
			"tunnel = [\"api.openai.com\"]\n",
			"egress.proxy.tunnel[0]", 8, "is already listed"},
		{"budget off", base + on + "[egress.budget]\nrequire_user = true\n",
			"egress.budget.enabled", 6, "must be true"},
		{"tokens per unit", base + on + "[egress.budget]\nenabled = true\n" +
			"tokens_per_unit = 0\n", "egress.budget.tokens_per_unit", 8, "at least 1"},
		{"platform ledger needs id", "[automation]\nversion = \"1\"\n" +
			"platform_url = \"http://127.0.0.1:1\"\nplatform_token = \"t\"\n" +
			"[egress]\nlisten = \"127.0.0.1:8081\"\nkeys = [\"k\"]\n" +
			"[egress.budget]\nenabled = true\nplatform_ledger = true\n",
			"automation.id", 1, "is required by egress.budget.platform_ledger"},
		{"call outlives retention", base + on + "call_timeout = \"2h\"\n" +
			"[ledger]\nidempotency_retention = \"1h\"\n",
			"egress.call_timeout", 6, "shorter than ledger.idempotency_retention"},
		{"outbox beside ledger", base + on + "[egress.outbox]\npath = \"./data/ledger.db\"\n",
			"egress.outbox.path", 7, "must differ from ledger.path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := onlyProblem(t, tt.doc)
			checkProblem(t, got, tt.path, tt.line, tt.want)
		})
	}
}

// TestEgressKeysFromFile: a file reference may hold several keys, one per
// line, each named by its line; no problem message shows a key.
func TestEgressKeysFromFile(t *testing.T) {
	t.Parallel()
	doc := base + "[egress]\nlisten = \"127.0.0.1:8081\"\n" +
		"keys = [\"env:OPENAI_KEY\", \"file:/run/keys\"]\n"
	files := map[string]string{"/run/keys": "# rotated weekly\nsk-file-one\n\n  sk-file-two  \n"}
	c, err := parse(t, doc, []string{"OPENAI_KEY=sk-env-key"}, files)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, k := range c.Egress.Keys {
		got = append(got, k.Source+"="+k.Value)
	}
	want := "env:OPENAI_KEY=sk-env-key file:/run/keys#1=sk-file-one file:/run/keys#2=sk-file-two"
	if strings.Join(got, " ") != want {
		t.Errorf("keys %q, want %q", strings.Join(got, " "), want)
	}

	_, err = parse(t, doc, []string{"OPENAI_KEY="}, map[string]string{})
	if err == nil {
		t.Fatal("missing key file accepted")
	}
	if msg := err.Error(); !strings.Contains(msg, "egress.keys[0]") ||
		!strings.Contains(msg, "egress.keys[1]") || strings.Contains(msg, "sk-") {
		t.Errorf("problems do not name both entries, or show a key:\n%s", msg)
	}
}

// TestPlatformToken: the platform token is automation.platform_token,
// else the first plain auth token; hashed tokens are never sent.
func TestPlatformToken(t *testing.T) {
	t.Parallel()
	c := mustParse(t, base+"[auth]\ntokens = [\"sha256:"+strings.Repeat("a", 64)+
		"\", \"plain-token\"]\n")
	if got := c.PlatformToken(); got != "plain-token" {
		t.Errorf("PlatformToken = %q, want the first plain token", got)
	}
	c = mustParse(t, base+"platform_token = \"own\"\n[auth]\ntokens = [\"plain-token\"]\n")
	if got := c.PlatformToken(); got != "own" {
		t.Errorf("PlatformToken = %q, want automation.platform_token", got)
	}
}
