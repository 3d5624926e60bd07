package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestPostgresLedger checks that the postgres backend resolves its DSN
// from each secret reference form and takes its pool settings.
func TestPostgresLedger(t *testing.T) {
	t.Parallel()
	const dsn = "postgres://zimmer:pw-1@127.0.0.1:5432/zimmer?search_path=ledger"
	env := []string{"LEDGER_DSN= " + dsn + "\n"}
	files := map[string]string{"/run/secrets/dsn": dsn + "\n"}
	tests := []struct {
		name, ref  string
		wantSource string
	}{
		{name: "env", ref: "env:LEDGER_DSN", wantSource: "env:LEDGER_DSN"},
		{name: "file", ref: "file:/run/secrets/dsn", wantSource: "file:/run/secrets/dsn"},
		{name: "inline", ref: dsn, wantSource: "ledger.dsn (inline)"},
	}
	for _, tt := range tests {
		doc := base + fmt.Sprintf("[ledger]\nbackend = \"postgres\"\ndsn = %q\n"+
			"max_conns = 3\nconnect_timeout = \"2s\"\nmigrate = false\n", tt.ref)
		c, err := parse(t, doc, env, files)
		if err != nil {
			t.Fatalf("%s: Parse: %v", tt.name, err)
		}
		l := c.Ledger
		if l.DSN.Value != dsn || l.DSN.Source != tt.wantSource {
			t.Errorf("%s: got dsn from %q (value ok: %v), want from %q",
				tt.name, l.DSN.Source, l.DSN.Value == dsn, tt.wantSource)
		}
		if l.MaxConns != 3 || l.ConnectTimeout != 2*time.Second || l.Migrate {
			t.Errorf("%s: got max_conns %d, connect_timeout %s, migrate %v, "+
				"want 3, 2s, false", tt.name, l.MaxConns, l.ConnectTimeout, l.Migrate)
		}
	}

	// Key/value DSNs and an environment override of the whole reference.
	c := mustParse(t, base+"[ledger]\nbackend = \"postgres\"\n",
		"ZIMMER_SIDECAR_LEDGER__DSN=host=127.0.0.1 dbname=zimmer password=pw-2")
	if c.Ledger.DSN.Value != "host=127.0.0.1 dbname=zimmer password=pw-2" {
		t.Errorf("env override: got dsn from %q", c.Ledger.DSN.Source)
	}
}

// TestPostgresLedgerProblems checks each rule of the postgres keys: the
// path, the line, and that no message shows the DSN or its password.
func TestPostgresLedgerProblems(t *testing.T) {
	t.Parallel()
	const secret = "pw-planted-77"
	env := []string{"EMPTY= ", "NOT_A_DSN=" + secret, "URL=mysql://u:" + secret + "@db/x"}
	tests := []struct {
		name, doc, path string
		line            int
		want            string
	}{
		{"dsn missing", "backend = \"postgres\"\n", "ledger.dsn", 3,
			"is required by the postgres backend"},
		{"dsn empty string", "backend = \"postgres\"\ndsn = \" \"\n", "ledger.dsn", 5,
			"is required by the postgres backend"},
		{"dsn env unset", "backend = \"postgres\"\ndsn = \"env:NOPE\"\n", "ledger.dsn", 5,
			"environment variable NOPE is not set"},
		{"dsn env empty", "backend = \"postgres\"\ndsn = \"env:EMPTY\"\n", "ledger.dsn", 5,
			"environment variable EMPTY is empty"},
		{"dsn file missing", "backend = \"postgres\"\ndsn = \"file:/nope\"\n",
			"ledger.dsn", 5, "cannot read file /nope: it does not exist"},
		{"dsn not a dsn", "backend = \"postgres\"\ndsn = \"env:NOT_A_DSN\"\n",
			"ledger.dsn", 5, "the value of env:NOT_A_DSN is not a PostgreSQL connection"},
		{"dsn other scheme", "backend = \"postgres\"\ndsn = \"env:URL\"\n",
			"ledger.dsn", 5, "is not a PostgreSQL connection string"},
		{"dsn inline not a dsn", "backend = \"postgres\"\ndsn = \"" + secret + "\"\n",
			"ledger.dsn", 5, "the value of ledger.dsn (inline) is not"},
		{"dsn wrong type", "dsn = 42\n", "ledger.dsn", 4,
			"must be a string (a secret reference) (got an integer)"},
		{"max conns zero", "max_conns = 0\n", "ledger.max_conns", 4, "must be at least 1"},
		{"max conns huge", "max_conns = 99999\n", "ledger.max_conns", 4,
			"must be at most 10000"},
		{"connect timeout", "connect_timeout = \"0s\"\n", "ledger.connect_timeout", 4,
			"must be a positive duration"},
		{"migrate type", "migrate = \"yes\"\n", "ledger.migrate", 4, "must be true or false"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := onlyProblem(t, base+"[ledger]\n"+tt.doc, env...)
			if p.Path != tt.path || p.Line != tt.line || !strings.Contains(p.Message, tt.want) {
				t.Errorf("got %s (line %d): %s; want %s (line %d) containing %q",
					p.Path, p.Line, p.Message, tt.path, tt.line, tt.want)
			}
			if strings.Contains(p.Message, secret) {
				t.Errorf("message shows the secret: %s", p.Message)
			}
		})
	}
}

// TestBoltIgnoresPostgresKeys: the bolt backend needs no DSN.
func TestBoltIgnoresPostgresKeys(t *testing.T) {
	t.Parallel()
	c := mustParse(t, base+"[ledger]\nbackend = \"bolt\"\ndsn = \"\"\n")
	if c.Ledger.DSN != (Secret{}) {
		t.Errorf("got dsn %v, want unset", c.Ledger.DSN)
	}
}

// TestSecretNeverShown: every way a Config may be printed, encoded or
// logged leaves the DSN out.
func TestSecretNeverShown(t *testing.T) {
	t.Parallel()
	const pw = "pw-hidden-31"
	c := mustParse(t, base+"[ledger]\nbackend = \"postgres\"\n"+
		"dsn = \"postgres://u:"+pw+"@127.0.0.1/x\"\n")
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "ledger", c.Ledger.DSN)
	encoded, err := json.Marshal(c.Ledger)
	if err != nil {
		t.Fatal(err)
	}
	outputs := map[string]string{
		"%v":   fmt.Sprintf("%v", c.Ledger),
		"%+v":  fmt.Sprintf("%+v", c.Ledger),
		"%#v":  fmt.Sprintf("%#v", c.Ledger),
		"%s":   fmt.Sprintf("%s", c.Ledger.DSN),
		"json": string(encoded),
		"slog": logged.String(),
	}
	for how, out := range outputs {
		if strings.Contains(out, pw) {
			t.Errorf("%s shows the password: %s", how, out)
		}
		if !strings.Contains(out, "ledger.dsn (inline)") {
			t.Errorf("%s does not name the source: %s", how, out)
		}
	}
}

// TestIdempotencyRetention: the default is a week; zero keeps records
// forever; anything else must be at least an hour.
func TestIdempotencyRetention(t *testing.T) {
	t.Parallel()
	if got := mustParse(t, base).Ledger.IdempotencyRetention; got != 7*24*time.Hour {
		t.Errorf("default: got %s, want 168h", got)
	}
	for _, tt := range []struct {
		value string
		want  time.Duration
	}{{"0s", 0}, {"1h", time.Hour}, {"720h", 30 * 24 * time.Hour}} {
		doc := base + "[ledger]\nidempotency_retention = \"" + tt.value + "\"\n"
		if got := mustParse(t, doc).Ledger.IdempotencyRetention; got != tt.want {
			t.Errorf("%s: got %s, want %s", tt.value, got, tt.want)
		}
	}
	for _, value := range []string{"59m", "-1h", "1ns"} {
		doc := base + "[ledger]\nidempotency_retention = \"" + value + "\"\n"
		p := onlyProblem(t, doc)
		if p.Path != "ledger.idempotency_retention" || p.Line != 4 ||
			!strings.Contains(p.Message, "must be 0 (keep forever) or at least 1h0m0s") {
			t.Errorf("%s: got %s (line %d): %s, want ledger.idempotency_retention "+
				"(line 4) at least 1h", value, p.Path, p.Line, p.Message)
		}
	}
}
