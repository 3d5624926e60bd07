package fakeopenai

import (
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestLatency(t *testing.T) {
	t.Parallel()
	s, ts := newTest(t, Options{Latency: time.Hour})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, ts.URL+"/v1/chat/completions",
		strings.NewReader(chatBody))
	req.Header.Set("Authorization", "Bearer "+testKey)
	if resp, err := ts.Client().Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("got %d before an hour passed, want a timeout", resp.StatusCode)
	}

	// The header overrides the option.
	resp, _ := post(t, ts, "/v1/chat/completions", chatBody,
		"Authorization", "Bearer "+testKey, HeaderLatency, "0s")
	if resp.StatusCode != http.StatusOK {
		t.Errorf("status with no latency: got %d, want 200", resp.StatusCode)
	}
	ts.Close() // waits for the first handler, which ends with its client
	if got := s.Requests()[0].Status; got != -1 {
		t.Errorf("status of the abandoned request: got %d, want -1", got)
	}
}

func TestDroppedKey(t *testing.T) {
	t.Parallel()
	s, ts := newTest(t, Options{})
	s.SetKeyState(testKey, State{Kind: Dropped, Times: 1})
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost,
		ts.URL+"/v1/chat/completions", strings.NewReader(chatBody))
	req.Header.Set("Authorization", "Bearer "+testKey)
	if resp, err := ts.Client().Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("got %d, want a dropped connection", resp.StatusCode)
	}
	if resp, _ := post(t, ts, "/v1/chat/completions", chatBody, bearer(testKey)...); resp.
		StatusCode != http.StatusOK {
		t.Errorf("after Times: got %d, want 200", resp.StatusCode)
	}
	recs := s.Requests()
	if len(recs) != 2 || recs[0].Status != -1 {
		t.Errorf("records: got %d, first status %d; want 2, -1", len(recs), recs[0].Status)
	}
	if st := s.Stats(testKey); st.Errors != 1 || st.OK != 1 {
		t.Errorf("stats: got %+v", st)
	}
}

func TestGzip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, accept, body string
		wantGzip           bool
	}{
		{"json", "gzip, deflate, br", chatBody, true},
		{"stream", "gzip", usageStream, true},
		{"refused", "gzip;q=0, br", chatBody, false},
		{"identity", "identity", usageStream, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, ts := newTest(t, Options{Gzip: true, Words: 2})
			// Setting Accept-Encoding stops the transport from decoding.
			resp, b := post(t, ts, "/v1/chat/completions", tt.body,
				"Authorization", "Bearer "+testKey, "Accept-Encoding", tt.accept)
			if got := resp.Header.Get("Content-Encoding") == "gzip"; got != tt.wantGzip {
				t.Fatalf("gzip: got %v, want %v", got, tt.wantGzip)
			}
			if tt.wantGzip {
				zr, err := gzip.NewReader(strings.NewReader(string(b)))
				if err != nil {
					t.Fatal(err)
				}
				if b, err = io.ReadAll(zr); err != nil {
					t.Fatalf("gunzip: %v", err)
				}
			}
			if !strings.Contains(string(b), `"total_tokens":`) {
				t.Errorf("answer lacks usage: %q", b)
			}
		})
	}
}

func TestNoUsage(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, path, body string }{
		{"chat json", "/v1/chat/completions", chatBody},
		{"chat stream", "/v1/chat/completions", usageStream},
		{"legacy json", "/v1/completions", `{"model":"m","prompt":"a"}`},
		{
			"legacy stream", "/v1/completions",
			`{"model":"m","prompt":"a","stream":true,"stream_options":{"include_usage":true}}`,
		},
		{"embeddings", "/v1/embeddings", `{"model":"m","input":"a"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, ts := newTest(t, Options{Words: 2})
			resp, b := post(t, ts, tt.path, tt.body,
				"Authorization", "Bearer "+testKey, HeaderNoUsage, "1")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status: got %d: %s", resp.StatusCode, b)
			}
			if strings.Contains(string(b), `"usage"`) || strings.Contains(string(b), "tokens") {
				t.Errorf("answer has usage: %s", b)
			}
			if st := s.Stats(testKey); st.PromptTokens == 0 {
				t.Errorf("stats: got %+v, want the tokens counted", st)
			}
		})
	}

	// The Responses API sends usage null.
	_, ts := newTest(t, Options{NoUsage: true})
	_, b := post(t, ts, "/v1/responses", `{"model":"m","input":"a"}`, bearer(testKey)...)
	if !strings.Contains(string(b), `"usage":null`) {
		t.Errorf("responses: got %s, want usage null", b)
	}
}

func TestModels(t *testing.T) {
	t.Parallel()
	_, ts := newTest(t, Options{})
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, ts.URL+"/v1/models", nil)
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"id":"`+DefaultModel) {
		t.Errorf("got %d %s", resp.StatusCode, b)
	}
}

// TestStreamDelays checks the waits happen (a lower bound only: waits never
// end early, so the test cannot flake).
func TestStreamDelays(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		hdr  []string
		min  time.Duration
	}{
		// 2 words, usage: 6 events, 5 delays.
		{"delay", []string{HeaderDelay, "10ms"}, 50 * time.Millisecond},
		{"first pause", []string{HeaderFirstPause, "40ms"}, 40 * time.Millisecond},
		{
			"split delay",
			[]string{HeaderSplitAt, "3", HeaderSplitDelay, "10ms"}, 60 * time.Millisecond,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			l := serveLogged(t, Options{}, usageStream, tt.hdr...)
			if got := time.Since(start); got < tt.min {
				t.Errorf("stream took %v, want at least %v", got, tt.min)
			}
			if w := l.writes(t); !strings.HasSuffix(w[len(w)-1], "[DONE]\n\n") {
				t.Errorf("stream did not end with [DONE]: %q", w)
			}
		})
	}
}
