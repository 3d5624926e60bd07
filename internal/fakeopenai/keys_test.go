package fakeopenai

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

const chatBody = `{"model":"m","messages":[{"role":"user","content":"hi"}]}`

func TestKeyStates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		state      *State // nil: the key is unknown
		wantStatus int
		wantType   string
		wantCode   any
		wantHeader map[string]string
	}{
		{name: "active", state: &State{}, wantStatus: 200},
		{
			name: "unknown", wantStatus: 401,
			wantType: "invalid_request_error", wantCode: "invalid_api_key",
		},
		{
			name: "revoked", state: &State{Kind: Revoked}, wantStatus: 401,
			wantType: "invalid_request_error", wantCode: "invalid_api_key",
		},
		{
			name:       "rate limited",
			state:      &State{Kind: RateLimited, RetryAfter: 1500 * time.Millisecond},
			wantStatus: 429, wantType: "requests", wantCode: "rate_limit_exceeded",
			wantHeader: map[string]string{
				"Retry-After": "2", "Retry-After-Ms": "1500", "X-Ratelimit-Reset-Requests": "1.5s",
			},
		},
		{
			name:       "rate limited minutes",
			state:      &State{Kind: RateLimited, RetryAfter: 6 * time.Minute},
			wantStatus: 429, wantType: "requests", wantCode: "rate_limit_exceeded",
			wantHeader: map[string]string{
				"Retry-After": "360", "Retry-After-Ms": "360000",
				"X-Ratelimit-Reset-Requests": "6m0s",
			},
		},
		{
			name: "no quota", state: &State{Kind: NoQuota}, wantStatus: 429,
			wantType: "insufficient_quota", wantCode: "insufficient_quota",
		},
		{
			name: "failing default", state: &State{Kind: Failing}, wantStatus: 500,
			wantType: "server_error", wantCode: nil,
		},
		{
			name: "failing 503", state: &State{Kind: Failing, Status: 503}, wantStatus: 503,
			wantType: "server_error", wantCode: nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := New(Options{})
			ts := httptest.NewServer(s.Handler())
			t.Cleanup(ts.Close)
			const key = "sk-proj-abcdefghijklmnopqrstuvwxyz"
			if tt.state != nil {
				s.SetKeyState(key, *tt.state)
			}
			resp, b := post(t, ts, "/v1/chat/completions", chatBody, bearer(key)...)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status: got %d, want %d: %s", resp.StatusCode, tt.wantStatus, b)
			}
			for k, v := range tt.wantHeader {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("header %s: got %q, want %q", k, got, v)
				}
			}
			if tt.wantStatus == 200 {
				return
			}
			e, _ := decode(t, b)["error"].(map[string]any)
			if e["type"] != tt.wantType || e["code"] != tt.wantCode {
				t.Errorf("error: got type %v code %v, want %v %v", e["type"], e["code"],
					tt.wantType, tt.wantCode)
			}
			if _, ok := e["param"]; !ok {
				t.Errorf("error has no param field: %s", b)
			}
			if strings.Contains(string(b), key) {
				t.Errorf("error body holds the whole key without EchoKey: %s", b)
			}
		})
	}
}

func TestKeyStateTimes(t *testing.T) {
	t.Parallel()
	s, ts := newTest(t, Options{})
	s.SetKeyState(testKey, State{Kind: RateLimited, Times: 2})
	var got []int
	for range 3 {
		resp, _ := post(t, ts, "/v1/chat/completions", chatBody, bearer(testKey)...)
		got = append(got, resp.StatusCode)
	}
	if got[0] != 429 || got[1] != 429 || got[2] != 200 {
		t.Errorf("statuses: got %v, want [429 429 200]", got)
	}
	if resp, _ := post(t, ts, "/v1/chat/completions", chatBody, bearer(testKey)...); resp.
		Header.Get("Retry-After") != "" {
		t.Errorf("Retry-After on an active key")
	}
	st := s.Stats(testKey)
	if st.Requests != 4 || st.OK != 2 || st.Errors != 2 {
		t.Errorf("stats: got %+v, want 4 requests, 2 ok, 2 errors", st)
	}
}

func TestKeyHeaders(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		hdr        []string
		wantStatus int
		wantKey    string
		wantAuth   bool
		wantAPIKey bool
	}{
		{name: "bearer", hdr: bearer(testKey), wantStatus: 200, wantKey: testKey, wantAuth: true},
		{
			name: "api-key", hdr: []string{"api-key", testKey}, wantStatus: 200,
			wantKey: testKey, wantAPIKey: true,
		},
		{
			name: "bearer wins", hdr: append(bearer("sk-placeholder"), "api-key", testKey),
			wantStatus: 401, wantKey: "sk-placeholder", wantAuth: true, wantAPIKey: true,
		},
		{name: "none", wantStatus: 401},
		{
			name: "basic", hdr: []string{"Authorization", "Basic eDp5"}, wantStatus: 401,
			wantAuth: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, ts := newTest(t, Options{})
			resp, b := post(t, ts, "/openai/deployments/d/chat/completions?api-version=x",
				chatBody, tt.hdr...)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status: got %d, want %d: %s", resp.StatusCode, tt.wantStatus, b)
			}
			recs := s.Requests()
			if len(recs) != 1 {
				t.Fatalf("records: got %d, want 1", len(recs))
			}
			r := recs[0]
			if r.Key != tt.wantKey || r.HasAuthorization != tt.wantAuth ||
				r.HasAPIKey != tt.wantAPIKey || r.Status != tt.wantStatus {
				t.Errorf("record: got key %q auth %v api-key %v status %d, want %q %v %v %d",
					r.Key, r.HasAuthorization, r.HasAPIKey, r.Status,
					tt.wantKey, tt.wantAuth, tt.wantAPIKey, tt.wantStatus)
			}
			if r.Query != "api-version=x" || r.Body == nil || string(r.Body) != chatBody {
				t.Errorf("record query %q body %q", r.Query, r.Body)
			}
		})
	}
}

func TestEchoKey(t *testing.T) {
	t.Parallel()
	const key = "sk-proj-SECRET-0123456789"
	for _, kind := range []Kind{Revoked, RateLimited, NoQuota} {
		s, ts := newTest(t, Options{EchoKey: true})
		s.SetKeyState(key, State{Kind: kind, RetryAfter: time.Second})
		resp, b := post(t, ts, "/v1/chat/completions", chatBody, bearer(key)...)
		if resp.StatusCode/100 != 4 || !strings.Contains(string(b), key) {
			t.Errorf("kind %d: got %d %s, want a 4xx echoing the key", kind, resp.StatusCode, b)
		}
	}
	// An unknown key is echoed as well.
	_, ts := newTest(t, Options{EchoKey: true})
	if _, b := post(t, ts, "/v1/chat/completions", chatBody, bearer(key)...); !strings.Contains(
		string(b), key) {
		t.Errorf("unknown key: got %s, want the key echoed", b)
	}
}

func TestMaskKey(t *testing.T) {
	t.Parallel()
	if got := MaskKey("sk-proj-abcdefghijklmnop"); got != "sk-pr***mnop" {
		t.Errorf("got %q", got)
	}
	if got := MaskKey("short"); got != "*****" {
		t.Errorf("got %q", got)
	}
}

func TestRoutesAndBadRequests(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, method, path, body string
		want                     int
	}{
		{"unknown path", "POST", "/v1/models/x", chatBody, http.StatusNotFound},
		{"get", "GET", "/v1/chat/completions", "", http.StatusNotFound},
		{"bad json", "POST", "/v1/chat/completions", `{"model":`, http.StatusBadRequest},
		{"no model", "POST", "/v1/chat/completions", `{"messages":[{"content":"x"}]}`, 400},
		{"no messages", "POST", "/v1/chat/completions", `{"model":"m"}`, 400},
		{"no input", "POST", "/v1/embeddings", `{"model":"m"}`, 400},
		{"trailing slash", "POST", "/v1/chat/completions/", chatBody, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, ts := newTest(t, Options{})
			req, _ := http.NewRequestWithContext(t.Context(), tt.method, ts.URL+tt.path,
				strings.NewReader(tt.body))
			req.Header.Set("Authorization", "Bearer "+testKey)
			resp, err := ts.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("status: got %d, want %d", resp.StatusCode, tt.want)
			}
		})
	}
}
