package sidecar

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// TestAccessLog checks one access line per request, on both listeners,
// with the endpoint and the user_automation_id where they are known.
func TestAccessLog(t *testing.T) {
	t.Parallel()
	h := startHarness(t, params{})
	consume := `{"user_automation_id": 7, "units": 2, "usage_type": "chat"}`
	rid := func(id string, hdr http.Header) http.Header {
		if hdr == nil {
			hdr = http.Header{}
		}
		hdr.Set("X-Request-Id", id)
		return hdr
	}

	type want struct {
		method, path string
		status       int
		endpoint     string // "" when the line must have none
		user         int    // 0 when the line must have none
	}
	tests := []struct {
		id, url, method, body string
		hdr                   http.Header
		want                  want
	}{
		{"rid-prov", h.publicURL() + "/provision", "POST", provisionBody,
			withToken(testToken), want{"POST", "/provision", 200, "provision", 7}},
		{"rid-cons", h.publicURL() + "/api/zimmer/usage/consume", "POST", consume,
			withToken(testToken),
			want{"POST", "/api/zimmer/usage/consume", 200, "usage/consume", 7}},
		{"rid-proxy", h.publicURL() + "/some/page?q=1", "GET", "", nil,
			want{"GET", "/some/page", 200, "proxy", 0}},
		{"rid-denied", h.publicURL() + "/usage/consume", "POST", consume, nil,
			want{"POST", "/usage/consume", 401, "usage/consume", 0}},
		{"rid-admin", h.adminURL() + "/admin/ledger/accounts/7", "GET", "", nil,
			want{"GET", "/admin/ledger/accounts/7", 200, "", 0}},
	}
	for _, tt := range tests {
		a := h.do(tt.method, tt.url, tt.body, rid(tt.id, tt.hdr))
		if a.status != tt.want.status {
			t.Fatalf("%s: got status %d, want %d: %s", tt.id, a.status, tt.want.status, a.body)
		}
		if got := a.header.Get("X-Request-Id"); got != tt.id {
			t.Errorf("%s: answer carries request id %q", tt.id, got)
		}
	}

	// After Run returned every handler has finished, so every line is in.
	if err := h.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	lines := map[string][]map[string]any{}
	for _, rec := range h.logs.records(t) {
		if rec["msg"] == "request" {
			id, _ := rec["request_id"].(string)
			lines[id] = append(lines[id], rec)
		}
	}
	for _, tt := range tests {
		got := lines[tt.id]
		if len(got) != 1 {
			t.Errorf("%s: got %d access lines, want 1: %v", tt.id, len(got), got)
			continue
		}
		l, w := got[0], tt.want
		check := func(key string, want any) {
			if fmt.Sprint(l[key]) != fmt.Sprint(want) {
				t.Errorf("%s: got %s %v, want %v", tt.id, key, l[key], want)
			}
		}
		check("method", w.method)
		check("path", w.path)
		check("status", w.status)
		check("client", "127.0.0.1")
		if w.endpoint == "" {
			check("endpoint", nil)
		} else {
			check("endpoint", w.endpoint)
		}
		if w.user == 0 {
			check("user_automation_id", nil)
		} else {
			check("user_automation_id", w.user)
		}
	}
}

// TestNoSecretInLogs plants the service token and other secrets in every
// part of requests that a log line could quote, then greps the log (C10).
func TestNoSecretInLogs(t *testing.T) {
	t.Parallel()
	const (
		bearer = "sk-live-9d8c7b6a5f4e3d2c1b0a"
		apiKey = "sk-query-1a2b3c4d5e6f7a8b"
	)
	h := startHarness(t, params{})
	pub := h.publicURL()
	tok := withToken(testToken)

	h.do("POST", pub+"/provision", provisionBody, tok)
	h.do("GET", pub+"/open/"+testToken+"?token="+testToken+"&api_key="+apiKey, "",
		http.Header{"Authorization": {"Bearer " + bearer}})
	h.do("GET", pub+"/private/"+testToken, "", tok)
	h.do("POST", pub+"/usage/consume/"+testToken, `{"units":1}`, tok)
	h.do("POST", pub+"/usage/consume", `{"user_automation_id":"`+testToken+`"}`, tok)
	h.do("POST", pub+"/provision", "", withToken(testToken+"x"))
	h.do("GET", h.adminURL()+"/admin/ledger/accounts/"+testToken, "", tok)
	// The app drops the connection: the warning names the path.
	if a := h.do("GET", pub+"/broken/"+testToken, "", tok); a.status != http.StatusBadGateway {
		t.Errorf("broken app call: got %d, want 502", a.status)
	}

	if err := h.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	logs := h.logs.String()
	for _, secret := range []string{testToken, bearer, apiKey} {
		if strings.Contains(logs, secret) {
			t.Errorf("the log contains %q:\n%s", secret, logs)
		}
	}
	// The checks above must have had something to find.
	if !strings.Contains(logs, `"msg":"app request failed"`) {
		t.Errorf("no app failure was logged:\n%s", logs)
	}
	if n := strings.Count(logs, "[REDACTED]"); n < 4 {
		t.Errorf("got %d masks, want at least 4 (the planted paths):\n%s", n, logs)
	}
}

// TestAccessLogNamesHealth: every other Zimmer endpoint and the proxy name
// themselves in the access line (and to the observe hook); /health does
// not, so its lines cannot be told apart by endpoint.
func TestAccessLogNamesHealth(t *testing.T) {
	t.Parallel()
	h := startHarness(t, params{})
	h.do("GET", h.publicURL()+"/health", "", http.Header{"X-Request-Id": {"rid-health"}})
	if err := h.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	for _, rec := range h.logs.records(t) {
		if rec["request_id"] == "rid-health" && rec["endpoint"] != "health" {
			t.Errorf("got endpoint %v, want health", rec["endpoint"])
		}
	}
}
