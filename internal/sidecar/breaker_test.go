package sidecar

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// healthOf reads /health: the HTTP status, the verdict and the breaker's
// check ("" when it has none).
func (h *harness) healthOf() (code int, status, breaker string) {
	h.t.Helper()
	a := h.do("GET", h.publicURL()+"/health", "", nil)
	var body struct {
		Status string `json:"status"`
		Checks map[string]struct {
			State string `json:"state"`
		} `json:"checks"`
	}
	if err := json.Unmarshal([]byte(a.body), &body); err != nil {
		h.t.Fatalf("health body %q: %v", a.body, err)
	}
	return a.status, body.Status, body.Checks[BreakerCheck].State
}

// wantHealth fails t unless /health answers code, status and breaker.
func (h *harness) wantHealth(what string, code int, status, breaker string) {
	h.t.Helper()
	gc, gs, gb := h.healthOf()
	if gc != code || gs != status || gb != breaker {
		h.t.Errorf("%s: /health %d %s with breaker %q; want %d %s with %q",
			what, gc, gs, gb, code, status, breaker)
	}
}

// breakerTOML is an [app.breaker] that opens after two failures in a row.
func breakerTOML(openFor string, required bool) string {
	return fmt.Sprintf("[app.breaker]\nconsecutive_failures = 2\nfailure_ratio = 0\n"+
		"open_for = %q\nrequired = %t\n", openFor, required)
}

func TestHealthFollowsBreaker(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		required   bool
		openCode   int
		openStatus string
		openCheck  string
	}{
		{"required", true, http.StatusServiceUnavailable, "down", "down"},
		{"not required", false, http.StatusOK, "degraded", "degraded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := startHarness(t, params{extra: breakerTOML("1h", tt.required)})
			h.waitReady()
			h.wantHealth("closed", http.StatusOK, "ok", "up")

			// Two calls the app drops open the breaker.
			for range 2 {
				if a := h.do("GET", h.publicURL()+"/broken/x", "", nil); a.status != 502 {
					t.Fatalf("dropped call: got %d %s, want 502", a.status, a.body)
				}
			}
			h.wantHealth("open", tt.openCode, tt.openStatus, tt.openCheck)

			// Proxied and mapped calls are refused without the app.
			seen := len(h.app.requests())
			a := h.do("GET", h.publicURL()+"/anything", "", nil)
			if a.status != http.StatusServiceUnavailable || a.header.Get("Retry-After") == "" ||
				!strings.Contains(a.body, "circuit open") {
				t.Errorf("proxied call while open: got %d %q Retry-After %q, want 503",
					a.status, a.body, a.header.Get("Retry-After"))
			}
			a = h.do("POST", h.publicURL()+"/provision", provisionBody, withToken(testToken))
			if a.status == http.StatusOK {
				t.Errorf("provision while open: got 200 %s, want a failure", a.body)
			}
			if got := len(h.app.requests()); got != seen {
				t.Errorf("the app saw %d requests while open, want none", got-seen)
			}
		})
	}
}

func TestHealthFollowsBreakerThroughHalfOpen(t *testing.T) {
	t.Parallel()
	h := startHarness(t, params{extra: breakerTOML("50ms", true)})
	h.waitReady()
	for range 2 {
		h.do("GET", h.publicURL()+"/broken/x", "", nil)
	}
	// The breaker is open for 50ms, then half-open until a call probes.
	eventually(t, "a half-open breaker in /health", func() bool {
		code, status, check := h.healthOf()
		return code == http.StatusOK && status == "degraded" && check == "degraded"
	})
	if a := h.do("GET", h.publicURL()+"/ok", "", nil); a.status != http.StatusOK {
		t.Fatalf("probe call: got %d %s, want the app's 200", a.status, a.body)
	}
	h.wantHealth("closed again", http.StatusOK, "ok", "up")
	logs := h.logs.String()
	for _, want := range []string{"app circuit breaker open",
		"app circuit breaker half-open", "app circuit breaker closed"} {
		if !strings.Contains(logs, want) {
			t.Errorf("no log line %q", want)
		}
	}
}

func TestBreakerDisabled(t *testing.T) {
	t.Parallel()
	h := startHarness(t, params{extra: "[app.breaker]\nenabled = false\n"})
	h.waitReady()
	for i := range 8 {
		if a := h.do("GET", h.publicURL()+"/broken/x", "", nil); a.status != 502 {
			t.Fatalf("call %d: got %d %s, want 502 from the app every time",
				i, a.status, a.body)
		}
	}
	h.wantHealth("no breaker", http.StatusOK, "ok", "")
}

func TestDeadlinesReachZimmerEndpoints(t *testing.T) {
	t.Parallel()
	// The provision hook goes to the fake app's slow path, which answers
	// only once released: the configured deadline must answer first.
	h := startHarness(t, params{
		extra: "[zimmer.deadlines]\nprovision = \"200ms\"\n",
		env:   []string{"ZIMMER_SIDECAR_ZIMMER__PROVISION__CALL=POST /slow/tenants"},
	})
	h.waitReady()

	// A caller whose budget is far below the default deadline (8s) gets
	// its answer only if the configured one is in force.
	h.client.Timeout = 3 * time.Second
	a, err := h.try("POST", h.publicURL()+"/provision", provisionBody, withToken(testToken))
	if err != nil {
		t.Fatalf("provision with a 3s budget: %v", err)
	}
	if a.status != http.StatusGatewayTimeout || !strings.HasPrefix(a.body, "{") {
		t.Errorf("slow provision hook: got %d %s, want a JSON 504", a.status, a.body)
	}
}
