package config

import (
	"strings"
	"testing"
)

// TestValidationRules checks each rule on its own: the one problem it
// raises, at the exact key path and line.
func TestValidationRules(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		doc  string // appended to base, so its first line is line 3
		path string
		line int
		want string
	}{
		// automation
		{"version missing", "[automation]\nid = 1\n", "automation.version", 1, "is required"},
		{"version empty", "[automation]\nversion = \" \"\n", "automation.version", 2,
			"is required"},
		{"negative id", "[automation]\nversion = \"1\"\nid = -1\n",
			"automation.id", 3, "must not be negative"},

		// listen
		{"public not host:port", "[listen]\npublic = \"8080\"\n",
			"listen.public", 4, `must be host:port`},
		{"public empty", "[listen]\npublic = \"\"\n", "listen.public", 4, "is required"},
		{"admin bad port", "[listen]\nadmin = \"127.0.0.1:99999\"\n",
			"listen.admin", 4, `invalid port "99999"`},
		{"admin same as public", "[listen]\npublic = \":8080\"\nadmin = \"127.0.0.1:8080\"\n",
			"listen.admin", 5, "must differ from listen.public"},
		{"zero header timeout", "[listen]\nread_header_timeout = \"0s\"\n",
			"listen.read_header_timeout", 4, "must be a positive duration"},
		{"negative grace", "[listen]\nshutdown_grace = \"-1s\"\n",
			"listen.shutdown_grace", 4, "must be a positive duration"},
		{"negative delay", "[listen]\nshutdown_delay = \"-1s\"\n",
			"listen.shutdown_delay", 4, "must not be negative"},
		{"reserved probe name", "[[app.probe]]\npath = \"/h\"\nname = \"app_breaker\"\n",
			"app.probe[0].name", 5, "circuit breaker"},
		{"duration without unit", "[listen]\nidle_timeout = 10\n",
			"listen.idle_timeout", 4, `must be a duration string like "10s"`},
		{"duration garbage", "[listen]\nidle_timeout = \"soon\"\n",
			"listen.idle_timeout", 4, `(got "soon")`},
		{"size unit", "[listen]\nmax_body = \"1XB\"\n",
			"listen.max_body", 4, `unknown unit "XB"`},
		{"size negative", "[listen]\nmax_body = -1\n",
			"listen.max_body", 4, "must not be negative"},
		{"size zero", "[listen]\nmax_header_bytes = 0\n",
			"listen.max_header_bytes", 4, "must be at least 1"},
		{"negative connections", "[listen]\nmax_connections = -5\n",
			"listen.max_connections", 4, "must be at least 0"},

		// log
		{"log level", "[log]\nlevel = \"verbose\"\n", "log.level", 4, `(got "verbose")`},

		// auth
		{"negative failures", "[auth]\nfailures_per_minute = -1\n",
			"auth.failures_per_minute", 4, "must be at least 0"},

		// app
		{"url scheme", "[app]\nurl = \"ftp://files.example\"\n",
			"app.url", 4, "http:// or https://"},
		{"url relative", "[app]\nurl = \"/app\"\n", "app.url", 4, "absolute"},
		{"url password", "[app]\nurl = \"http://u:hunter2@127.0.0.1\"\n",
			"app.url", 4, "must not contain a user name or password"},
		{"url query", "[app]\nurl = \"http://127.0.0.1:8000/?x=1\"\n", "app.url", 4, "query"},
		{"connect timeout", "[app]\nconnect_timeout = \"0s\"\n",
			"app.connect_timeout", 4, "positive"},
		{"probe path", "[[app.probe]]\npath = \"healthz\"\n",
			"app.probe[0].path", 4, `must start with "/" (got "healthz")`},
		{"probe path missing", "[[app.probe]]\nevery = \"5s\"\n",
			"app.probe[0].path", 3, `must start with "/"`},
		{"probe method", "[[app.probe]]\npath = \"/h\"\nmethod = \"PING\"\n",
			"app.probe[0].method", 5, `(got "PING")`},
		{"probe pass_after", "[[app.probe]]\npath = \"/h\"\npass_after = 0\n",
			"app.probe[0].pass_after", 5, "must be at least 1"},
		{"probe fail_after", "[[app.probe]]\npath = \"/h\"\nfail_after = 0\n",
			"app.probe[0].fail_after", 5, "must be at least 1"},
		{"probe timeout not below every", "[[app.probe]]\npath = \"/h\"\nevery = \"2s\"\n",
			"app.probe[0].timeout", 3, "must be shorter than every"},
		{"probe every zero", "[[app.probe]]\npath = \"/h\"\nevery = \"0s\"\n",
			"app.probe[0].every", 5, "positive"},
		{"probe status", "[[app.probe]]\npath = \"/h\"\nexpect_status = 42\n",
			"app.probe[0].expect_status", 5, "from 100 to 599"},
		{"probe names unique by default",
			"[[app.probe]]\npath = \"/h\"\n[[app.probe]]\npath = \"/h\"\n",
			"app.probe[1].name", 5, `"/h" is already the name of app.probe[0]`},
		{"probe names unique", "[[app.probe]]\nname = \"a\"\npath = \"/h\"\n" +
			"[[app.probe]]\nname = \"a\"\npath = \"/g\"\n",
			"app.probe[1].name", 7, "already the name"},

		// ledger
		{"backend", "[ledger]\nbackend = \"sqlite\"\n",
			"ledger.backend", 4, `must be "bolt" or "postgres" (got "sqlite")`},
		{"bolt path", "[ledger]\npath = \"\"\n", "ledger.path", 4, "required by the bolt backend"},
		{"demo rule", "[ledger]\ndemo_rule = \"half\"\n",
			"ledger.demo_rule", 4, `must be "whole" or "spill"`},
		{"demo tokens", "[ledger]\ndefault_demo_tokens = -1\n",
			"ledger.default_demo_tokens", 4, "at least 0"},
		{"max units", "[ledger]\nmax_units = 0\n", "ledger.max_units", 4, "at least 1"},

		// zimmer
		{"prefix slash", "[zimmer]\nprefixes = [\"/\", \"api\"]\n",
			"zimmer.prefixes[1]", 4, `must start with "/" (got "api")`},
		{"prefix duplicate", "[zimmer]\nprefixes = [\n  \"/api\",\n  \"/api/\",\n]\n",
			"zimmer.prefixes[1]", 6, `"/api/" repeats zimmer.prefixes[0]`},
		{"prefix unclean", "[zimmer]\nprefixes = [\"/a//b\"]\n",
			"zimmer.prefixes[0]", 4, "clean path"},
		{"no prefix", "[zimmer]\nprefixes = []\n", "zimmer.prefixes", 4, "at least one"},
		{"service url template", "[zimmer]\nservice_url = \"https://x/{tenant}\"\n",
			"zimmer.service_url", 4, "unknown field {tenant}"},
		{"service url relative", "[zimmer]\nservice_url = \"/u/{user_id}\"\n",
			"zimmer.service_url", 4, "absolute"},
		{"call method", "[zimmer.provision]\ncall = \"FETCH /x\"\n",
			"zimmer.provision.call", 4, `unknown method "FETCH"`},
		{"call path", "[zimmer.provision]\ncall = \"POST x\"\n",
			"zimmer.provision.call", 4, `path must start with one "/"`},
		{"call path with a host", "[zimmer.provision]\ncall = \"POST //evil.example/x\"\n",
			"zimmer.provision.call", 4, `path must start with one "/"`},
		{"call shape", "[zimmer.provision]\ncall = \"POST\"\n",
			"zimmer.provision.call", 4, `must be "METHOD /path"`},
		{"call missing", "[zimmer.provision]\nbody = { a = 1 }\n",
			"zimmer.provision.call", 3, "is required"},
		{"call template", "[zimmer.kb_status]\ncall = \"GET /t/{user_automation}\"\n",
			"zimmer.kb_status.call", 4, "did you mean {user_automation_id}?"},
		{"call braces", "[zimmer.kb_status]\ncall = \"GET /t/{user_id\"\n",
			"zimmer.kb_status.call", 4, `"{" without "}"`},
		{"body template", "[zimmer.provision]\ncall = \"POST /t\"\n" +
			"body = { owner = { id = \"{owner}\" } }\n",
			"zimmer.provision.body.owner.id", 5, "unknown field {owner}"},
		{"body template in array", "[zimmer.provision]\ncall = \"POST /t\"\n" +
			"body = { ids = [\"{user_id}\", \"{nope}\"] }\n",
			"zimmer.provision.body.ids[1]", 5, "unknown field {nope}"},
		{"kb_reset alone", "[zimmer.kb_reset]\ncall = \"POST /wipe\"\n",
			"zimmer.kb_reset", 3, "needs [zimmer.kb_status]"},
		{"state map", "[zimmer.kb_status]\ncall = \"GET /s\"\n" +
			"state = { from = \"phase\", map = { idle = \"done\" } }\n",
			"zimmer.kb_status.state.map.idle", 5, `(got "done")`},
		{"state default", "[zimmer.kb_status]\ncall = \"GET /s\"\n" +
			"[zimmer.kb_status.state]\nfrom = \"phase\"\ndefault = 3\n",
			"zimmer.kb_status.state.default", 7, "must be one of"},
		{"extract path", "[zimmer.kb_status]\ncall = \"GET /s\"\n" +
			"total_documents = \"summary..count\"\n",
			"zimmer.kb_status.total_documents", 5, "dot path"},
		{"extract from missing", "[zimmer.kb_status]\ncall = \"GET /s\"\n" +
			"last_updated = { default = \"x\" }\n",
			"zimmer.kb_status.last_updated.from", 5, "is required"},
		{"extract unknown key", "[zimmer.kb_status]\ncall = \"GET /s\"\n" +
			"last_updated = { form = \"a.b\" }\n",
			"zimmer.kb_status.last_updated.form", 5, `did you mean "from"?`},

		// routes
		{"route path slash", "[[route]]\npath = \"chat\"\n",
			"route[0].path", 4, `must start with "/" (got "chat")`},
		{"route star inside", "[[route]]\npath = \"/x/*/y\"\n",
			"route[0].path", 4, `may only end in "/*"`},
		{"route param shape", "[[route]]\npath = \"/x/{id\"\n",
			"route[0].path", 4, "bad parameter"},
		{"route param partial", "[[route]]\npath = \"/x/id{id}\"\n",
			"route[0].path", 4, "whole segment"},
		{"route param twice", "[[route]]\npath = \"/x/{a}/{a}\"\n",
			"route[0].path", 4, "repeats parameter {a}"},
		{"route trailing slash", "[[route]]\npath = \"/x/\"\n",
			"route[0].path", 4, `try "/x"`},
		{"route dots", "[[route]]\npath = \"/x/../y\"\n", "route[0].path", 4, "clean path"},
		{"route method", "[[route]]\npath = \"/x\"\nmethods = [\"GET\", \"FETCH\"]\n",
			"route[0].methods[1]", 5, `(got "FETCH")`},
		{"route duplicate", "[[route]]\npath = \"/x\"\n[[route]]\npath = \"/x\"\n" +
			"methods = [\"GET\"]\n",
			"route[1].path", 6, "already route[0]"},
		{"meter units", "[[route]]\npath = \"/x\"\nprotect = true\n" +
			"meter = { units = 0, usage_type = \"t\", user = \"header:X-U\" }\n",
			"route[0].meter.units", 6, "at least 1"},
		{"meter units above max", "[ledger]\nmax_units = 10\n[[route]]\npath = \"/x\"\n" +
			"protect = true\nmeter = { units = 11, usage_type = \"t\", user = \"header:X-U\" }\n",
			"route[0].meter.units", 8, "must not exceed ledger.max_units (10)"},
		{"meter usage type", "[[route]]\npath = \"/x\"\nprotect = true\n" +
			"[route.meter]\nuser = \"query:u\"\n",
			"route[0].meter.usage_type", 6, "is required"},
		{"meter user missing", "[[route]]\npath = \"/x\"\nprotect = true\n" +
			"meter.usage_type = \"t\"\n",
			"route[0].meter.user", 6, "is required"},
		{"meter user source", "[[route]]\npath = \"/x\"\nprotect = true\n" +
			"meter = { usage_type = \"t\", user = \"cookie:sid\" }\n",
			"route[0].meter.user", 6, `(got "cookie:sid")`},
		{"meter user header", "[[route]]\npath = \"/x\"\nprotect = true\n" +
			"meter = { usage_type = \"t\", user = \"header:X Bad\" }\n",
			"route[0].meter.user", 6, "not a valid header name"},
		{"meter user path param", "[[route]]\npath = \"/t/{tenant}/chat\"\nprotect = true\n" +
			"meter = { usage_type = \"t\", user = \"path:id\" }\n",
			"route[0].meter.user", 6,
			`names path parameter "id", but the route path has only "tenant"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			doc := base + tt.doc
			if strings.HasPrefix(tt.doc, "[automation]") {
				doc = tt.doc // a whole document
			}
			checkProblem(t, onlyProblem(t, doc), tt.path, tt.line, tt.want)
		})
	}
}

// TestValidNormalises checks values with one canonical form.
func TestValidNormalises(t *testing.T) {
	t.Parallel()
	c := mustParse(t, base+`
[zimmer]
prefixes = ["/", "/api/", "/api/zimmer"]

[[app.probe]]
path = "/healthz"
method = "head"

[[route]]
path = "/t/{id}/*"
methods = ["get", "Post"]
protect = true
meter = { usage_type = "chat", user = "path:id" }
`)
	if got, want := strings.Join(c.Zimmer.Prefixes, " "), "/ /api /api/zimmer"; got != want {
		t.Errorf("got prefixes %q, want %q", got, want)
	}
	if p := c.App.Probes[0]; p.Name != "/healthz" || p.Method != "HEAD" {
		t.Errorf("got probe name %q method %q, want /healthz HEAD", p.Name, p.Method)
	}
	r := c.Routes[0]
	if got := strings.Join(r.Methods, " "); got != "GET POST" {
		t.Errorf("got methods %q, want GET POST", got)
	}
	if r.Meter == nil || r.Meter.Units != 1 || r.Meter.User != (UserRef{UserFromPath, "id"}) {
		t.Errorf("got meter %+v, want 1 unit charged to path:id", r.Meter)
	}
}

// TestManyProblemsOneRun checks that every problem is reported, in file
// order, with the file name and line in Error().
func TestManyProblemsOneRun(t *testing.T) {
	t.Parallel()
	doc := `[automation]
version = ""

[listen]
pubic = ":8080"
max_body = "lots"

[[route]]
path = "chat"
meter = { units = 0, usage_type = "t", user = "header:X-T" }
`
	_, err := parse(t, doc, []string{"ZIMMER_SIDECAR_LOG__LEVEL=loud"}, nil)
	want := []string{
		`config.toml:2: automation.version: is required`,
		`config.toml:5: listen.pubic: unknown key; did you mean "public"?`,
		`config.toml:6: listen.max_body: must be a whole number of bytes`,
		`config.toml:9: route[0].path: must start with "/" (got "chat")`,
		`config.toml:10: route[0].meter.units: must be at least 1 (got 0)`,
		`ZIMMER_SIDECAR_LOG__LEVEL: log.level: must be one of`,
	}
	ps := problemsOf(t, err)
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) || len(ps) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%v", len(lines), len(want), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d: got %q, want prefix %q", i, lines[i], w)
		}
	}
}

// TestUnknownKeys checks unknown keys at several depths, with and without
// a suggestion.
func TestUnknownKeys(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, doc, path string
		line            int
		want            string
	}{
		{"typo", "[listen]\npubic = \":1\"\n", "listen.pubic", 4, `did you mean "public"?`},
		{"section typo", "[lisen]\npublic = \":1\"\n", "lisen", 3, `did you mean "listen"?`},
		{"far off", "[log]\ncolour = true\n", "log.colour", 4, "known keys here: level, access"},
		{"in array entry", "[[route]]\npath = \"/x\"\nprotected = true\n",
			"route[0].protected", 5, `did you mean "protect"?`},
		{"in inline table", "[[route]]\npath = \"/x\"\nprotect = true\n" +
			"meter = { usage_type = \"t\", user = \"query:u\", unit = 2 }\n",
			"route[0].meter.unit", 6, `did you mean "units"?`},
		{"quoted key", "[listen]\n\"a.b\" = 1\n", `listen."a.b"`, 4, "unknown key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			checkProblem(t, onlyProblem(t, base+tt.doc), tt.path, tt.line, tt.want)
		})
	}
}

// TestWrongTypes checks that a value of the wrong TOML type is a problem
// naming what was expected and what was found.
func TestWrongTypes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, doc, path string
		line            int
		want            string
	}{
		{"bool", "[log]\naccess = \"yes\"\n", "log.access", 4, `must be true or false (got "yes")`},
		{"int", "[listen]\nmax_connections = \"10\"\n",
			"listen.max_connections", 4, `must be a whole number (got "10")`},
		{"float", "[ledger]\nmax_units = 1.5\n", "ledger.max_units", 4, "(got float 1.5)"},
		{"string", "[listen]\npublic = 8080\n", "listen.public", 4, "(got integer 8080)"},
		{"list", "[zimmer]\nprefixes = \"/\"\n",
			"zimmer.prefixes", 4, "must be an array of strings"},
		{"list entry", "[zimmer]\nprefixes = [\"/\", 2]\n",
			"zimmer.prefixes[1]", 4, "must be a string (got integer 2)"},
		{"section", "listen = 5\n", "listen", 1, "must be a table (got integer 5)"},
		{"array of tables", "route = { path = \"/\" }\n", "route", 1, "array of tables"},
		{"array entry", "route = [1]\n", "route[0]", 1, "must be a table"},
		{"date", "[ledger]\nmax_units = 2024-01-01\n", "ledger.max_units", 4,
			"(got a date or time)"},
		{"extract", "[zimmer.kb_status]\ncall = \"GET /s\"\nstate = 1\n",
			"zimmer.kb_status.state", 5, "dot path"},
		{"map value", "[zimmer.kb_status]\ncall = \"GET /s\"\n" +
			"state = { from = \"p\", map = { a = 1 } }\n",
			"zimmer.kb_status.state.map.a", 5, "must be a string"},
		{"body", "[zimmer.provision]\ncall = \"POST /p\"\nbody = \"{}\"\n",
			"zimmer.provision.body", 5, "must be a table"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			doc := base + tt.doc
			if tt.line == 1 {
				doc = tt.doc + base // top-level keys come before any table
			}
			checkProblem(t, onlyProblem(t, doc), tt.path, tt.line, tt.want)
		})
	}
}

// TestSyntaxError checks that a TOML syntax error carries its line.
func TestSyntaxError(t *testing.T) {
	t.Parallel()
	p := onlyProblem(t, base+"[listen]\npublic = \":8080\n")
	if p.Line != 4 || p.Path != "" || !strings.Contains(p.Message, "TOML syntax error") {
		t.Errorf("got %+v, want a syntax error on line 4", p)
	}
	p = onlyProblem(t, base+"[log]\nlevel = \"info\"\nlevel = \"debug\"\n")
	if p.Line != 5 {
		t.Errorf("got %+v, want the duplicate key on line 5", p)
	}
}

// TestValidFull checks a config that uses every feature at once.
func TestValidFull(t *testing.T) {
	t.Parallel()
	c := mustParse(t, base+`
[listen]
admin = ""
[zimmer]
service_url = "https://app.example/u/{user_automation_id}?owner={user_id}"
[zimmer.kb_status]
call = "POST /kb/{user_automation_id}/status?owner={user_id}"
body = { user = "{user_id}", nested = { list = ["{demo_tokens}", 1, true] } }
state = { from = "phase", default = "ready" }
[zimmer.kb_reset]
call = "DELETE /kb/{user_automation_id}"
[[route]]
path = "/*"
protect = true
`)
	if c.Listen.Admin != "" ||
		c.Zimmer.KBReset.Call != (Call{"DELETE", "/kb/{user_automation_id}"}) {
		t.Errorf("got admin %q reset %v", c.Listen.Admin, c.Zimmer.KBReset.Call)
	}
	if got := c.Zimmer.KBStatus.State; got.From != "phase" || got.Default != "ready" {
		t.Errorf("got state %+v, want from phase default ready", got)
	}
	if len(c.Warnings()) != 1 || c.Warnings()[0].Path != "auth.tokens" {
		t.Errorf("got warnings %v, want only the empty token list", c.Warnings())
	}
}

// TestWarnings checks the risky but legal choices.
func TestWarnings(t *testing.T) {
	t.Parallel()
	c := mustParse(t, base+`
[listen]
admin = "0.0.0.0:9090"
[auth]
tokens = ["literal-token"]
[[route]]
path = "/chat"
meter = { usage_type = "chat", user = "header:X-Tenant" }
`)
	want := []string{
		`line 5: listen.admin: "0.0.0.0:9090" is not a loopback address`,
		"line 7: auth.tokens[0]: is a plaintext token written in the file",
		"line 8: route[0]: is metered but not protected",
	}
	ws := c.Warnings()
	if len(ws) != len(want) {
		t.Fatalf("got %d warnings, want %d: %v", len(ws), len(want), ws)
	}
	for i, w := range want {
		if !strings.HasPrefix(ws[i].String(), w) {
			t.Errorf("got %q, want prefix %q", ws[i], w)
		}
	}
	if strings.Contains(ws[1].String(), "literal-token") {
		t.Errorf("warning shows the token: %q", ws[1])
	}
}
