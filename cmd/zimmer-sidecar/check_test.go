package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
)

// checkToken is the service token the fake automation below accepts.
const checkToken = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00"

// fakeAutomation serves a minimal compliant automation with the guide's
// answers; health is its /health answer.
func fakeAutomation(t *testing.T, health map[string]any) *httptest.Server {
	t.Helper()
	now := "2025-01-10T16:54:49.650619+00:00"
	answers := map[string]map[string]any{
		"/provision": {"success": true, "message": "ok", "provisioned_at": now,
			"integration_status": "active"},
		"/usage/consume": {"accepted": true, "remaining_demo_tokens": 4,
			"remaining_paid_tokens": 0, "message": "ok"},
		"/kb/status": {"status": "ready", "last_updated": now, "total_documents": 0,
			"healthy": true, "backup_status": false, "error_logs": []string{}},
		"/kb/reset": {"success": true, "message": "ok", "reset_at": now},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path := strings.TrimSuffix(r.URL.Path, "/")
		w.Header().Set("Content-Type", "application/json")
		ans, ok := answers[path]
		switch {
		case path == "/health":
			_ = json.NewEncoder(w).Encode(health)
		case !ok:
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"detail":"Not Found"}`))
		case r.Method == http.MethodGet && path != "/kb/status":
			w.Header().Set("Allow", "POST")
			w.WriteHeader(http.StatusMethodNotAllowed)
			_, _ = w.Write([]byte(`{"detail":"Method Not Allowed"}`))
		case r.Header.Get("X-Zimmer-Service-Token") != checkToken:
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"detail":"Invalid service token"}`))
		default:
			if path == "/kb/status" && r.Method == http.MethodPost {
				post := map[string]any{"status": "healthy"} // the platform's words
				for k, v := range ans {
					if k != "status" {
						post[k] = v
					}
				}
				ans = post
			}
			_ = json.NewEncoder(w).Encode(ans)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

var goodHealth = map[string]any{"status": "ok", "version": "1", "uptime": 5}

// runCheckCmd runs `check args...` with env as the environment.
func runCheckCmd(t *testing.T, env map[string]string, args ...string) (
	stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = checkWith(context.Background(), args, &out, &errOut,
		func(k string) string { return env[k] })
	return out.String(), errOut.String(), err
}

func TestCheckCommandPasses(t *testing.T) {
	t.Parallel()
	srv := fakeAutomation(t, goodHealth)
	env := map[string]string{"ZIMMER_SERVICE_TOKEN": checkToken}
	stdout, stderr, err := runCheckCmd(t, env, srv.URL)
	if err != nil {
		t.Fatalf("got %v, want success\n%s%s", err, stdout, stderr)
	}
	if !strings.Contains(stdout, "PASS: the automation would be listed") ||
		!strings.Contains(stdout, "ENDPOINT") {
		t.Errorf("table:\n%s", stdout)
	}
	if strings.Contains(stdout+stderr, checkToken) {
		t.Error("the token appears in the output")
	}
}

func TestCheckCommandJSONAndTokenSources(t *testing.T) {
	t.Parallel()
	srv := fakeAutomation(t, goodHealth)
	tokenFile := writeFile(t, "token", checkToken+"\n")
	tests := []struct {
		name string
		env  map[string]string
		args []string
	}{
		{"token file", nil, []string{"--json", "-token-file", tokenFile, srv.URL}},
		{"named variable, flags after the URL", map[string]string{"MY_TOKEN": checkToken},
			[]string{srv.URL, "-token-env", "MY_TOKEN", "-json"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			stdout, stderr, err := runCheckCmd(t, tt.env, tt.args...)
			if err != nil {
				t.Fatalf("got %v\n%s", err, stderr)
			}
			var rep struct {
				Listed  bool             `json:"listed"`
				Health  string           `json:"health"`
				Results []map[string]any `json:"results"`
			}
			if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
				t.Fatalf("stdout is not the JSON report: %v\n%s", err, stdout)
			}
			if !rep.Listed || rep.Health != "healthy" || len(rep.Results) < 20 {
				t.Errorf("got listed %v, health %q, %d results; want listed, healthy, "+
					"every check", rep.Listed, rep.Health, len(rep.Results))
			}
		})
	}
}

func TestCheckCommandFailsWithoutUptime(t *testing.T) {
	t.Parallel()
	srv := fakeAutomation(t, map[string]any{"status": "ok", "version": "1"})
	env := map[string]string{"ZIMMER_SERVICE_TOKEN": checkToken}
	stdout, _, err := runCheckCmd(t, env, srv.URL)
	if err == nil || errors.Is(err, errUsage) {
		t.Fatalf("got %v, want a check failure (exit 1)", err)
	}
	if !strings.Contains(err.Error(), "would not be listed") ||
		!strings.Contains(err.Error(), "health (platform classifier)") {
		t.Errorf("error %q should say it would not be listed and name the health check", err)
	}
	if !strings.Contains(stdout, `lacks "uptime"`) || !strings.Contains(stdout, "FAIL:") {
		t.Errorf("table should name uptime:\n%s", stdout)
	}
}

func TestCheckCommandUsageErrors(t *testing.T) {
	t.Parallel()
	env := map[string]string{"ZIMMER_SERVICE_TOKEN": checkToken}
	missing := filepath.Join(t.TempDir(), "absent")
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"no URL", env, nil, "no base URL"},
		{"two URLs", env, []string{"http://127.0.0.1:1", "http://127.0.0.1:2"},
			"at most one"},
		{"no token", nil, []string{"http://127.0.0.1:1"}, "$ZIMMER_SERVICE_TOKEN"},
		{"missing token file", env, []string{"-token-file", missing, "http://127.0.0.1:1"},
			"read -token-file"},
		{"bad kb", env, []string{"-kb", "maybe", "http://127.0.0.1:1"}, "auto, on or off"},
		{"bad scheme", env, []string{"file:///etc/passwd"}, "http or https"},
		{"zero id", env, []string{"-user-id", "0", "http://127.0.0.1:1"}, "positive"},
		{"unknown flag", env, []string{"-token", "x", "http://127.0.0.1:1"}, "-token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			stdout, stderr, err := runCheckCmd(t, tt.env, tt.args...)
			if !errors.Is(err, errUsage) || !strings.Contains(stderr, tt.want) {
				t.Errorf("got %v, stderr %q; want errUsage mentioning %q",
					err, stderr, tt.want)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
		})
	}
}

func TestCheckIsDispatched(t *testing.T) {
	t.Parallel()
	_, stderr, err := runCmd(t, "check")
	if !errors.Is(err, errUsage) || !strings.Contains(stderr, "zimmer-sidecar check") {
		t.Errorf("got %v, %q; want the check command's usage", err, stderr)
	}
}
