package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/e2etest"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/health"
)

// checkReport is the part of `check -json`'s report the tests read.
type checkReport struct {
	Listed  bool   `json:"listed"`
	Health  string `json:"health"`
	Results []struct {
		Endpoint string `json:"endpoint"`
		Check    string `json:"check"`
		Result   string `json:"result"`
		Reason   string `json:"reason"`
	} `json:"results"`
}

// runCheck runs the real binary's `check args...` with token in
// ZIMMER_SERVICE_TOKEN and returns its stdout, stderr and exit code.
func runCheck(ctx context.Context, t *testing.T, token string, args ...string) (
	stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, e2etest.Binary(t), append([]string{"check"}, args...)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ZIMMER_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "ZIMMER_SERVICE_TOKEN="+token)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if exit, ok := errors.AsType[*exec.ExitError](err); ok {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatalf("run check: %v", err)
	}
	if strings.Contains(errOut.String(), "WARNING: DATA RACE") {
		t.Errorf("check reported a data race:\n%s", errOut.String())
	}
	return out.String(), errOut.String(), code
}

// TestCheckPassesBehindTheSidecar runs `zimmer-sidecar check` against the
// sidecar in front of each example app, under every prefix: it must exit
// 0 with no failed row, the KB checked and nothing but the report on
// stdout.
func TestCheckPassesBehindTheSidecar(t *testing.T) {
	for _, tc := range apps {
		t.Run(tc.app.Name, func(t *testing.T) {
			t.Parallel()
			s := startStack(t, tc, nil, e2etest.FastProbes("300ms", "250ms", 2, 2))
			ctx := testContext(t)
			waitHealthy(ctx, t, s)

			for _, prefix := range s.cfg.prefixes {
				base := strings.TrimSuffix(s.sidecar.PublicURL()+prefix, "/")
				stdout, stderr, code := runCheck(ctx, t, s.token, "-json", "-kb", "on", base)
				var rep checkReport
				if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
					t.Fatalf("check %s: stdout is not a report: %v\n%s%s",
						base, err, stdout, stderr)
				}
				if code != 0 || !rep.Listed || rep.Health != health.ClassHealthy {
					t.Errorf("check %s: exit %d, listed %v, health %q; want 0, true, "+
						"healthy\n%s%s", base, code, rep.Listed, rep.Health, stdout, stderr)
				}
				for _, r := range rep.Results {
					if r.Result == "fail" || r.Result == "skip" {
						t.Errorf("check %s: %s %q: %s %s", base, r.Endpoint, r.Check,
							r.Result, r.Reason)
					}
				}
				if len(rep.Results) < 26 {
					t.Errorf("check %s: %d rows, want every check", base, len(rep.Results))
				}
				if strings.Contains(stdout+stderr, s.token) {
					t.Errorf("check %s: the service token appears in its output", base)
				}
			}
		})
	}
}

// waitHealthy waits until the sidecar's /health is healthy, as a team
// would before asking to be registered.
func waitHealthy(ctx context.Context, t *testing.T, s *stack) {
	t.Helper()
	e2etest.Eventually(t, 20*time.Second, 100*time.Millisecond, func() (bool, string) {
		r, class, err := s.platform.Health(ctx, s.zimmer("health"))
		return err == nil && class == health.ClassHealthy, r.String()
	})
}

// TestCheckFailsWithoutUptime runs `check` against a tiny automation
// whose /health lacks uptime: exit 1, and the reason names uptime in both
// the table and the JSON report.
func TestCheckFailsWithoutUptime(t *testing.T) {
	t.Parallel()
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path != "/health" {
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"detail":"Not Found"}`))
			return
		}
		_, _ = w.Write([]byte(`{"status":"ok","version":"1.0.0"}`))
	}))
	t.Cleanup(app.Close)
	ctx := testContext(t)
	token := newToken(t)

	// 1. The table for people.
	stdout, stderr, code := runCheck(ctx, t, token, app.URL)
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s%s", code, stdout, stderr)
	}
	healthLine := ""
	for _, l := range strings.Split(stdout, "\n") {
		if strings.HasPrefix(l, "health") && strings.Contains(l, "platform classifier") {
			healthLine = l
		}
	}
	if !strings.Contains(healthLine, "fail") || !strings.Contains(healthLine, `"uptime"`) {
		t.Errorf("health row %q: want a failure naming uptime\n%s", healthLine, stdout)
	}
	if !strings.Contains(stderr, "would not be listed") {
		t.Errorf("stderr %q: want it to say the automation would not be listed", stderr)
	}

	// 2. The JSON report for machines.
	stdout, stderr, code = runCheck(ctx, t, token, "--json", app.URL)
	var rep checkReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil || code != 1 {
		t.Fatalf("exit %d, report error %v\n%s%s", code, err, stdout, stderr)
	}
	if rep.Listed || rep.Health != health.ClassUnhealthy || len(rep.Results) == 0 ||
		rep.Results[0].Endpoint != "health" || rep.Results[0].Result != "fail" ||
		!strings.Contains(rep.Results[0].Reason, `lacks "uptime"`) {
		t.Errorf("report: want not listed, unhealthy, the health row failing on "+
			"uptime\n%s", stdout)
	}
}
