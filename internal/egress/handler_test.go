package egress

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/egress/outbox"
)

func TestInjectsLeasedKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		auth       AuthStyle
		wantHeader string
		wantValue  string
		absent     string
	}{
		{"bearer", AuthBearer, "Authorization", "Bearer " + testKeys[0], "Api-Key"},
		{"api-key", AuthAPIKey, "Api-Key", testKeys[0], "Authorization"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			up, seen := newUpstream(t, func(w http.ResponseWriter, _ *http.Request, _ seenRequest) {
				writeJSONAnswer(w, 200, chatAnswer(3, 4))
			})
			e := newEnv(t, up.URL+"/openai?api-version=2024-10-21", 1, func(o *Options) {
				o.Auth = tt.auth
			})
			resp, body := e.do("POST", "/v1/chat/completions?x=1", chatBody, http.Header{
				"Authorization":               {"Bearer sk-placeholder"},
				"Api-Key":                     {"placeholder"},
				"Proxy-Authorization":         {"Basic abc"},
				"X-Zimmer-Service-Token":      {"service-token-secret-value"},
				"X-Zimmer-User-Automation-Id": {"42"},
				"X-Forwarded-For":             {"10.0.0.1"},
				"Accept-Encoding":             {"gzip"},
				"User-Agent":                  {"app/1.0"},
				"Openai-Beta":                 {"assistants=v2"},
			})
			if resp.StatusCode != 200 {
				t.Fatalf("status %d, body %s", resp.StatusCode, body)
			}
			reqs := seen.all()
			if len(reqs) != 1 {
				t.Fatalf("upstream got %d requests, want 1", len(reqs))
			}
			got := reqs[0]
			if v := got.Header.Get(tt.wantHeader); v != tt.wantValue {
				t.Errorf("%s = %q, want the leased key", tt.wantHeader, v)
			}
			if v := got.Header.Values(tt.absent); len(v) != 0 {
				t.Errorf("%s = %q, want none", tt.absent, v)
			}
			for _, name := range []string{
				"Proxy-Authorization", "X-Zimmer-Service-Token",
				"X-Zimmer-User-Automation-Id", "X-Forwarded-For",
			} {
				if v := got.Header.Values(name); len(v) != 0 {
					t.Errorf("%s reached the upstream: %q", name, v)
				}
			}
			if v := got.Header.Get("Accept-Encoding"); v != "identity" {
				t.Errorf("Accept-Encoding = %q, want identity", v)
			}
			if v := got.Header.Get("User-Agent"); v != "app/1.0" {
				t.Errorf("User-Agent = %q, want the app's", v)
			}
			if v := got.Header.Get("Openai-Beta"); v != "assistants=v2" {
				t.Errorf("Openai-Beta = %q, want the app's", v)
			}
			want := "/openai/v1/chat/completions?api-version=2024-10-21&x=1"
			if got.URI != want {
				t.Errorf("upstream URI %q, want %q", got.URI, want)
			}
			if got.Body != chatBody {
				t.Errorf("upstream body %q, want the app's", got.Body)
			}
			for _, bad := range []string{"sk-placeholder", "placeholder\n"} {
				if strings.Contains(fmt.Sprint(got.Header), bad) {
					t.Errorf("the app's placeholder %q reached the upstream", bad)
				}
			}
			e.wait()
			if rec := e.sink.only(t); rec.UserAutomationID != 42 || rec.KeyID != 1 {
				t.Errorf("record %+v: want user 42, key 1", rec)
			}
		})
	}
}

// C5: headers the app names in Connection are removed before the egress
// sets its own, so "Connection: Authorization" cannot remove the key.
func TestConnectionCannotRemoveKey(t *testing.T) {
	t.Parallel()
	for _, auth := range []AuthStyle{AuthBearer, AuthAPIKey} {
		t.Run(string(auth), func(t *testing.T) {
			t.Parallel()
			up, seen := newUpstream(t, func(w http.ResponseWriter, _ *http.Request, _ seenRequest) {
				writeJSONAnswer(w, 200, chatAnswer(1, 1))
			})
			e := newEnv(t, up.URL, 1, func(o *Options) { o.Auth = auth })
			resp, _ := e.do("POST", "/v1/chat/completions", chatBody, http.Header{
				"Connection":    {"Authorization, api-key, X-Custom, Accept-Encoding"},
				"Authorization": {"Bearer placeholder"},
				"X-Custom":      {"1"},
			})
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			got := seen.all()[0].Header
			if k := bearerKey(got); k != testKeys[0] {
				t.Errorf("upstream key %q, want the leased key", k)
			}
			if v := got.Get("X-Custom"); v != "" {
				t.Errorf("X-Custom = %q: a header named in Connection went through", v)
			}
			if v := got.Get("Accept-Encoding"); v != "identity" {
				t.Errorf("Accept-Encoding = %q, want identity", v)
			}
			e.wait()
		})
	}
}

// rawRequest writes a raw HTTP/1.1 request to the egress and returns
// the answer.
func rawRequest(t *testing.T, addr, raw string) (*http.Response, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// The egress is never an open proxy: only the upstream is contacted.
func TestNeverAnOpenProxy(t *testing.T) {
	t.Parallel()
	other, otherSeen := newUpstream(t, func(w http.ResponseWriter, _ *http.Request, _ seenRequest) {
		w.WriteHeader(200)
	})
	up, seen := newUpstream(t, func(w http.ResponseWriter, _ *http.Request, _ seenRequest) {
		writeJSONAnswer(w, 200, map[string]any{"object": "list", "data": []any{}})
	})
	e := newEnv(t, up.URL, 1, nil)
	egressAddr := strings.TrimPrefix(e.srv.URL, "http://")
	upHost := strings.TrimPrefix(up.URL, "http://")
	otherHost := strings.TrimPrefix(other.URL, "http://")

	tests := []struct {
		name       string
		raw        string
		wantStatus int
		wantCode   string // "" when forwarded
		wantURI    string
	}{
		{
			name: "absolute-form to another host",
			raw: "GET " + other.URL + "/v1/models HTTP/1.1\r\n" +
				"Host: " + otherHost + "\r\n\r\n",
			wantStatus: 403, wantCode: "upstream_not_allowed",
		},
		{
			name:       "absolute-form to a name",
			raw:        "GET http://example.com/v1/models HTTP/1.1\r\nHost: example.com\r\n\r\n",
			wantStatus: 403, wantCode: "upstream_not_allowed",
		},
		{
			name:       "CONNECT",
			raw:        "CONNECT " + otherHost + " HTTP/1.1\r\nHost: " + otherHost + "\r\n\r\n",
			wantStatus: 403, wantCode: "upstream_not_allowed",
		},
		{
			name:       "Host naming another server",
			raw:        "GET /v1/models HTTP/1.1\r\nHost: " + otherHost + "\r\n\r\n",
			wantStatus: 200, wantURI: "/v1/models",
		},
		{
			name:       "absolute-form naming the upstream",
			raw:        "GET " + up.URL + "/v1/models HTTP/1.1\r\nHost: " + upHost + "\r\n\r\n",
			wantStatus: 200, wantURI: "/v1/models",
		},
		{
			name:       "dot segments",
			raw:        "GET /v1/../../admin HTTP/1.1\r\nHost: x\r\n\r\n",
			wantStatus: 400, wantCode: "invalid_path",
		},
		{
			name:       "encoded dot segments",
			raw:        "GET /v1/%2e%2e/admin HTTP/1.1\r\nHost: x\r\n\r\n",
			wantStatus: 400, wantCode: "invalid_path",
		},
		{
			name: "websocket upgrade",
			raw: "GET /v1/realtime HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n" +
				"Upgrade: websocket\r\n\r\n",
			wantStatus: 501, wantCode: "upgrade_not_supported",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(seen.all())
			resp, body := rawRequest(t, egressAddr, tt.raw)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tt.wantStatus, body)
			}
			reqs := seen.all()
			if tt.wantCode != "" {
				if got := decodeError(t, body); got.Error.Code != tt.wantCode {
					t.Errorf("code %q, want %q", got.Error.Code, tt.wantCode)
				}
				if len(reqs) != before {
					t.Errorf("the upstream was contacted")
				}
				return
			}
			if len(reqs) != before+1 {
				t.Fatalf("upstream got %d requests, want %d", len(reqs), before+1)
			}
			if got := reqs[len(reqs)-1]; got.URI != tt.wantURI || got.Host != upHost {
				t.Errorf("upstream got %s (host %s), want %s (host %s)",
					got.URI, got.Host, tt.wantURI, upHost)
			}
		})
	}
	if n := len(otherSeen.all()); n != 0 {
		t.Errorf("another host got %d requests", n)
	}
	e.wait()
}

// JSON answers of the four metered APIs are metered and passed through
// unchanged.
func TestJSONUsage(t *testing.T) {
	t.Parallel()
	answers := map[string]string{
		"/v1/chat/completions": `{"id":"c1","object":"chat.completion","model":"gpt-4o-mini",` +
			`"choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],` +
			`"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}}`,
		"/v1/completions": `{"id":"c2","object":"text_completion",` +
			`"model":"gpt-3.5-turbo-instruct",` +
			`"choices":[{"text":"x","index":0}],` +
			`"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}`,
		"/v1/embeddings": `{"object":"list","data":[{"object":"embedding","index":0,` +
			`"embedding":[0.1,0.2]}],"model":"text-embedding-3-small",` +
			`"usage":{"prompt_tokens":9,"total_tokens":9}}`,
		"/v1/responses": `{"id":"resp_1","object":"response","model":"gpt-4.1",` +
			`"output":[],"usage":{"input_tokens":20,"output_tokens":30,"total_tokens":50}}`,
	}
	up, _ := newUpstream(t, func(w http.ResponseWriter, r *http.Request, _ seenRequest) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Request-Id", "req_1")
		_, _ = io.WriteString(w, answers[r.URL.Path])
	})
	tests := []struct {
		path                      string
		model                     string
		prompt, completion, total int64
	}{
		{"/v1/chat/completions", "gpt-4o-mini", 11, 7, 18},
		{"/v1/completions", "gpt-3.5-turbo-instruct", 5, 2, 7},
		{"/v1/embeddings", "text-embedding-3-small", 9, 0, 9},
		{"/v1/responses", "gpt-4.1", 20, 30, 50},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, up.URL, 1, nil)
			resp, body := e.do("POST", tt.path, `{"model":"m","input":"x"}`, nil)
			if resp.StatusCode != 200 || body != answers[tt.path] {
				t.Fatalf("got %d %q, want the upstream's answer unchanged", resp.StatusCode, body)
			}
			if resp.Header.Get("X-Request-Id") != "req_1" {
				t.Errorf("X-Request-Id not passed on")
			}
			if resp.ContentLength != int64(len(body)) {
				t.Errorf("Content-Length %d, want %d", resp.ContentLength, len(body))
			}
			e.wait()
			rec := e.sink.only(t)
			if rec.Model != tt.model || rec.PromptTokens != tt.prompt ||
				rec.CompletionTokens != tt.completion || rec.TotalTokens != tt.total {
				t.Errorf("record %+v, want model %s tokens %d/%d/%d",
					rec, tt.model, tt.prompt, tt.completion, tt.total)
			}
			if !rec.UsageKnown || !rec.Success || rec.Exit != outbox.ExitComplete {
				t.Errorf("record %+v: want usage known, success, complete", rec)
			}
			if rec.Endpoint != tt.path || len(rec.ID) != 32 {
				t.Errorf("record endpoint %q id %q", rec.Endpoint, rec.ID)
			}
			_, _, tokens, _ := e.metrics.snapshot()
			if tokens[tt.model] != int(tt.total) {
				t.Errorf("metrics tokens %v, want %d for %s", tokens, tt.total, tt.model)
			}
		})
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	t.Parallel()
	sink := &fakeSink{t: t}
	e := newEnv(t, "http://127.0.0.1:1", 1, nil)
	mustURL := func(s string) *url.URL {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	tests := []struct {
		name string
		opts Options
	}{
		{"no pool", Options{Sink: sink}},
		{"no sink", Options{Pool: e.pool}},
		{"ftp upstream", Options{Pool: e.pool, Sink: sink, Upstream: mustURL("ftp://x")}},
		{"no host", Options{Pool: e.pool, Sink: sink, Upstream: mustURL("http:///v1")}},
		{"user info", Options{Pool: e.pool, Sink: sink, Upstream: mustURL("https://u:p@x")}},
		{"dot path", Options{Pool: e.pool, Sink: sink, Upstream: mustURL("https://x/a/../b")}},
		{"auth style", Options{Pool: e.pool, Sink: sink, Auth: "basic"}},
		{"negative", Options{Pool: e.pool, Sink: sink, MaxAttempts: -1}},
	}
	for _, tt := range tests {
		if _, err := New(tt.opts); err == nil {
			t.Errorf("%s: New succeeded, want an error", tt.name)
		}
	}
	h, err := New(Options{Pool: e.pool, Sink: sink})
	if err != nil {
		t.Fatal(err)
	}
	if got := h.opts.Upstream.String(); got != DefaultUpstream {
		t.Errorf("default upstream %q, want %q", got, DefaultUpstream)
	}
	if h.opts.UserHeader != DefaultUserHeader || h.opts.MaxAttempts != DefaultMaxAttempts {
		t.Errorf("defaults not applied: %+v", h.opts)
	}
}
