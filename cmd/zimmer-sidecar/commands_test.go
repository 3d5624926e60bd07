package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/config"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

func TestVersionAndHelp(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"version"}, "zimmer-sidecar dev\n"},
		{[]string{"help"}, usage},
	}
	for _, tt := range tests {
		stdout, stderr, err := runCmd(t, tt.args...)
		if err != nil || stdout != tt.want || stderr != "" {
			t.Errorf("%q: got %v, stdout %q, stderr %q; want nil and %q",
				tt.args, err, stdout, stderr, tt.want)
		}
	}
}

// TestHelpFlags: run's switch lists "-h" and "--help" next to "help", but
// the dispatch sends any argument starting with "-" to `run`.
func TestHelpFlags(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{"-h", "--help"} {
		stdout, _, err := runCmd(t, arg)
		if err != nil || stdout != usage {
			t.Errorf("%s: got %v, stdout %q; want nil and the usage", arg, err, stdout)
		}
	}
}

func TestUnknownCommand(t *testing.T) {
	t.Parallel()
	stdout, stderr, err := runCmd(t, "frob", "-x")
	if !errors.Is(err, errUsage) {
		t.Errorf("got %v, want errUsage", err)
	}
	if stdout != "" || !strings.Contains(stderr, `unknown command "frob"`) ||
		!strings.Contains(stderr, usage) {
		t.Errorf("got stdout %q, stderr %q; want the command named and the usage",
			stdout, stderr)
	}
}

func TestCheckConfigGood(t *testing.T) {
	t.Parallel()
	path := configFile(t, ":8080", "127.0.0.1:9090", "http://127.0.0.1:8000")
	stdout, stderr, err := runCmd(t, "check-config", path)
	if err != nil || stdout != path+": ok\n" || stderr != "" {
		t.Errorf("got %v, stdout %q, stderr %q; want nil and %q",
			err, stdout, stderr, path+": ok\n")
	}
}

func TestCheckConfigWarnings(t *testing.T) {
	t.Parallel()
	path := writeFile(t, "warn.toml", `[automation]
version = "1"

[listen]
admin = "0.0.0.0:9090"

[auth]
tokens = ["plain-token-in-file"]
`)
	stdout, stderr, err := runCmd(t, "check-config", path)
	if err != nil || stdout != path+": ok\n" {
		t.Fatalf("got %v, stdout %q; want the file accepted", err, stdout)
	}
	for _, want := range []string{
		"warning: " + path + ":5: listen.admin: ",
		"warning: " + path + ":8: auth.tokens[0]: ",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if strings.Contains(stderr, "plain-token-in-file") {
		t.Errorf("a warning prints the token:\n%s", stderr)
	}
}

func TestCheckConfigBad(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		doc  string
		want []string // "LINE: key" prefixes after the path
	}{
		{"several problems", `[automation]
version = "1.0.0"

[listen]
public = "nope"
shutdown_grace = "-1s"
listn = 3

[[route]]
path = "no-slash"
`, []string{"5: listen.public: ", "6: listen.shutdown_grace: ", "7: listen.listn: ",
			"10: route[0].path: "}},
		{"syntax", "[automation\nversion = \"1\"\n", []string{"1: TOML syntax error"}},
		{"missing version", "[app]\nurl = \"http://127.0.0.1:8000\"\n",
			[]string{"automation.version: "}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := writeFile(t, "bad.toml", tt.doc)
			stdout, stderr, err := runCmd(t, "check-config", path)
			if err == nil || errors.Is(err, errUsage) {
				t.Fatalf("got %v, want a configuration error", err)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file", err)
			}
			if stdout != "" {
				t.Errorf("got stdout %q, want nothing", stdout)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, path+":"+w) &&
					!strings.Contains(stderr, path+": "+w) {
					t.Errorf("stderr lacks %q:\n%s", path+":"+w, stderr)
				}
			}
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			if len(lines) != len(tt.want) {
				t.Errorf("got %d lines, want %d (one per problem):\n%s",
					len(lines), len(tt.want), stderr)
			}
		})
	}
}

func TestCheckConfigArgs(t *testing.T) {
	t.Parallel()
	if _, _, err := runCmd(t, "check-config", "a.toml", "b.toml"); !errors.Is(err, errUsage) {
		t.Errorf("two files: got %v, want errUsage", err)
	}
	if _, _, err := runCmd(t, "check-config", "-nope"); !errors.Is(err, errUsage) {
		t.Errorf("unknown flag: got %v, want errUsage", err)
	}
	missing := filepath.Join(t.TempDir(), "missing.toml")
	_, stderr, err := runCmd(t, "check-config", missing)
	if err == nil || errors.Is(err, errUsage) || !strings.Contains(stderr, "missing.toml") {
		t.Errorf("missing file: got %v, stderr %q; want an error naming the file",
			err, stderr)
	}
}

// TestCheckConfigFromEnvironment uses $ZIMMER_SIDECAR_CONFIG when no file
// is named. Not parallel: it sets the environment.
func TestCheckConfigFromEnvironment(t *testing.T) {
	path := configFile(t, ":8080", "127.0.0.1:9090", "http://127.0.0.1:8000")
	t.Setenv(config.EnvConfigPath, path)
	stdout, _, err := runCmd(t, "check-config")
	if err != nil || stdout != path+": ok\n" {
		t.Errorf("got %v, stdout %q; want %q", err, stdout, path+": ok\n")
	}
}

func TestLedgerShow(t *testing.T) {
	t.Parallel()
	api := newAdminAPI(t)
	for _, args := range [][]string{
		{"ledger", "show", "7", "-admin", api.srv.URL},
		{"ledger", "show", "-admin", api.srv.URL, "7"},
		{"ledger", "show", "--admin=" + api.srv.URL, "7"},
	} {
		stdout, stderr, err := runCmd(t, args...)
		if err != nil {
			t.Errorf("%q: %v (stderr %q)", args, err, stderr)
			continue
		}
		var a metering.Account
		if err := json.Unmarshal([]byte(stdout), &a); err != nil {
			t.Errorf("%q: stdout %q is not an account: %v", args, stdout, err)
		}
		if a.UserAutomationID != 7 || a.DemoTokens != 5 {
			t.Errorf("%q: got %+v, want account 7 with 5 demo tokens", args, a)
		}
		if !strings.Contains(stdout, "\n  \"demo_tokens\": 5,") {
			t.Errorf("%q: got %q, want indented JSON", args, stdout)
		}
	}
}

func TestLedgerCredit(t *testing.T) {
	t.Parallel()
	api := newAdminAPI(t)
	url := api.srv.URL
	tests := []struct {
		args     []string
		wantPaid int64
	}{
		{[]string{"ledger", "credit", "7", "50", "-admin", url, "-reason", "x"}, 50},
		{[]string{"ledger", "credit", "-admin", url, "7", "-reason", "y", "5"}, 55},
		{[]string{"ledger", "credit", "7", "10", "-idempotency-key", "inv-1",
			"-admin", url}, 65},
		{[]string{"ledger", "credit", "7", "10", "-idempotency-key", "inv-1",
			"-admin", url}, 65}, // a retry credits nothing
	}
	for _, tt := range tests {
		stdout, stderr, err := runCmd(t, tt.args...)
		if err != nil {
			t.Fatalf("%q: %v (stderr %q)", tt.args, err, stderr)
		}
		var a metering.Account
		if err := json.Unmarshal([]byte(stdout), &a); err != nil || a.PaidTokens != tt.wantPaid {
			t.Errorf("%q: printed %q (%v), want paid %d", tt.args, stdout, err, tt.wantPaid)
		}
	}
	if a := api.account(t); a.PaidTokens != 65 {
		t.Errorf("got stored paid %d, want 65", a.PaidTokens)
	}

	var reasons []string
	err := api.store.Journal(context.Background(), 0, 0, func(e metering.Entry) error {
		if e.Kind == metering.EntryCredit {
			reasons = append(reasons, e.Reason+"/"+e.IdempotencyKey)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Credits without -idempotency-key get a generated key of their own.
	keyed := regexp.MustCompile(`^x/cli-[0-9a-f]{24},y/cli-[0-9a-f]{24},/inv-1$`)
	if got := strings.Join(reasons, ","); !keyed.MatchString(got) {
		t.Errorf("got credits %q, want x/cli-<key>,y/cli-<key>,/inv-1", got)
	}
}

func TestLedgerExport(t *testing.T) {
	t.Parallel()
	api := newAdminAPI(t)
	for i := range 3 {
		_, _, err := runCmd(t, "ledger", "credit", "7", fmt.Sprint(i+1), "-admin", api.srv.URL)
		if err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"ledger", "export", "-admin", api.srv.URL}, "[1 2 3 4]"},
		{[]string{"ledger", "export", "-after", "2", "-admin", api.srv.URL}, "[3 4]"},
		{[]string{"ledger", "export", "-admin", api.srv.URL, "-after", "4"}, "[]"},
	}
	for _, tt := range tests {
		stdout, _, err := runCmd(t, tt.args...)
		if err != nil {
			t.Fatalf("%q: %v", tt.args, err)
		}
		var seqs []uint64
		sc := bufio.NewScanner(strings.NewReader(stdout))
		for sc.Scan() {
			var e metering.Entry
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				t.Fatalf("%q: line %q: %v", tt.args, sc.Text(), err)
			}
			seqs = append(seqs, e.Seq)
		}
		if got := fmt.Sprint(seqs); got != tt.want {
			t.Errorf("%q: got seqs %s, want %s", tt.args, got, tt.want)
		}
	}
}

func TestLedgerUsage(t *testing.T) {
	t.Parallel()
	api := newAdminAPI(t)
	u := api.srv.URL
	tests := [][]string{
		{"ledger"},
		{"ledger", "show", "-admin", u},
		{"ledger", "show", "0", "-admin", u},
		{"ledger", "show", "-7", "-admin", u},
		{"ledger", "show", "seven", "-admin", u},
		{"ledger", "credit", "7", "-admin", u},
		{"ledger", "credit", "7", "0", "-admin", u},
		{"ledger", "credit", "7", "x", "-admin", u},
		{"ledger", "credit", "7", "5", "-bogus", "-admin", u},
		{"ledger", "export", "-after", "-1", "-admin", u},
		{"ledger", "frob", "-admin", u},
		{"ledger", "show", "7", "-admin"},
	}
	for _, args := range tests {
		_, stderr, err := runCmd(t, args...)
		if !errors.Is(err, errUsage) {
			t.Errorf("%q: got %v, want errUsage", args, err)
		}
		if stderr == "" {
			t.Errorf("%q: nothing explained on stderr", args)
		}
	}
	if n := api.callCount(); n != 0 {
		t.Errorf("usage mistakes made %d admin calls, want 0", n)
	}
	if a := api.account(t); a.PaidTokens != 0 {
		t.Errorf("got paid %d, want 0", a.PaidTokens)
	}
}

// TestLedgerExtraArguments: a typo such as `credit 7 5 0` must not credit
// 5 and ignore the rest.
func TestLedgerExtraArguments(t *testing.T) {
	t.Parallel()
	api := newAdminAPI(t)
	for _, args := range [][]string{
		{"ledger", "show", "7", "8", "-admin", api.srv.URL},
		{"ledger", "credit", "7", "5", "0", "-admin", api.srv.URL},
		{"ledger", "export", "2", "-admin", api.srv.URL},
	} {
		if _, _, err := runCmd(t, args...); !errors.Is(err, errUsage) {
			t.Errorf("%q: got %v, want errUsage", args, err)
		}
	}
	if a := api.account(t); a.PaidTokens != 0 {
		t.Errorf("got paid %d, want 0", a.PaidTokens)
	}
}

// TestLedgerUsageBeforeConfig: a mistyped sub-command or a missing ID is
// a usage error even when no config file can be found. Not parallel: it
// sets the environment.
func TestLedgerUsageBeforeConfig(t *testing.T) {
	t.Setenv(config.EnvConfigPath, filepath.Join(t.TempDir(), "absent.toml"))
	for _, args := range [][]string{{"ledger", "frob"}, {"ledger", "show"}} {
		if _, _, err := runCmd(t, args...); !errors.Is(err, errUsage) {
			t.Errorf("%q: got %v, want errUsage", args, err)
		}
	}
}

func TestLedgerErrors(t *testing.T) {
	t.Parallel()
	api := newAdminAPI(t)

	_, _, err := runCmd(t, "ledger", "show", "8", "-admin", api.srv.URL)
	if err == nil || errors.Is(err, errUsage) || !strings.Contains(err.Error(), "404") {
		t.Errorf("unknown account: got %v, want a 404 error", err)
	}
	_, _, err = runCmd(t, "ledger", "credit", "8", "5", "-admin", api.srv.URL)
	if err == nil || !strings.Contains(err.Error(), "unknown user_automation_id") {
		t.Errorf("credit unknown account: got %v, want the admin API's detail", err)
	}

	// Nothing listens on a closed test server's address.
	gone := newAdminAPI(t)
	gone.srv.Close()
	_, _, err = runCmd(t, "ledger", "show", "7", "-admin", gone.srv.URL)
	if err == nil || errors.Is(err, errUsage) {
		t.Errorf("unreachable admin: got %v, want an error", err)
	}
}

// TestLedgerFromConfig finds the admin listener in the config file. An
// unspecified host is dialled on loopback, and the plaintext service
// token is sent along (needed when the admin API is not on loopback).
func TestLedgerFromConfig(t *testing.T) {
	t.Parallel()
	api := newAdminAPI(t)
	port := api.srv.URL[strings.LastIndex(api.srv.URL, ":")+1:]

	for _, addr := range []string{"127.0.0.1:" + port, "0.0.0.0:" + port, ":" + port} {
		path := configFile(t, "127.0.0.1:0", addr, "http://127.0.0.1:8000")
		stdout, stderr, err := runCmd(t, "ledger", "show", "7", "-config", path)
		if err != nil || !strings.Contains(stdout, `"user_automation_id": 7`) {
			t.Errorf("admin %s: got %v, stdout %q, stderr %q", addr, err, stdout, stderr)
		}
	}
	api.mu.Lock()
	tokens := append([]string(nil), api.tokens...)
	api.mu.Unlock()
	for i, tok := range tokens {
		if tok != testToken {
			t.Errorf("call %d sent token %q, want the configured one", i, tok)
		}
	}
	if len(tokens) != 3 {
		t.Errorf("got %d admin calls, want 3", len(tokens))
	}

	// listen.admin = "" disables the admin listener: nothing to call.
	path := configFile(t, "127.0.0.1:0", "", "http://127.0.0.1:8000")
	_, _, err := runCmd(t, "ledger", "show", "7", "-config", path)
	if err == nil || !strings.Contains(err.Error(), "admin listener is disabled") {
		t.Errorf("no admin listener: got %v", err)
	}
	bad := writeFile(t, "bad.toml", "[listen]\npublic = 1\n")
	_, stderr, err := runCmd(t, "ledger", "show", "7", "-config", bad)
	if err == nil || !strings.Contains(stderr, "bad.toml:2: listen.public") {
		t.Errorf("bad config: got %v, stderr %q", err, stderr)
	}
}

func TestDialable(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{":9090", "127.0.0.1:9090"},
		{"0.0.0.0:9090", "127.0.0.1:9090"},
		{"[::]:9090", "127.0.0.1:9090"},
		{"127.0.0.1:9090", "127.0.0.1:9090"},
		{"[::1]:9090", "[::1]:9090"},
		{"localhost:9090", "localhost:9090"},
		{"no-port", "no-port"},
	}
	for _, tt := range tests {
		if got := dialable(tt.in); got != tt.want {
			t.Errorf("dialable(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// testClient is the tests' own client, so no connection lingers in
// http.DefaultTransport.
var testClient = &http.Client{Timeout: 10 * time.Second}

// statusOf sends GET url and returns the status, failing t on error.
func statusOf(t *testing.T, url string, hdr http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = hdr
	resp, err := testClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, _ = bufio.NewReader(resp.Body).WriteTo(&b)
	return resp.StatusCode, b.String()
}
