package fakeopenai

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

const testKey = "sk-test-0123456789abcdef"

// newTest starts a fake with testKey on an httptest server.
func newTest(t *testing.T, opts Options) (*Server, *httptest.Server) {
	t.Helper()
	opts.Keys = append(opts.Keys, testKey)
	s := New(opts)
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return s, ts
}

// post sends body to path with the given headers and returns the answer
// with its body read.
func post(
	t *testing.T, ts *httptest.Server, path, body string, hdr ...string,
) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, ts.URL+path,
		strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	return resp, b
}

// bearer returns the Authorization header pair for key.
func bearer(key string) []string { return []string{"Authorization", "Bearer " + key} }

// decode decodes JSON b into a generic value.
func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("answer is not a JSON object: %v: %s", err, b)
	}
	return v
}

// sseEvent is one parsed server-sent event.
type sseEvent struct {
	name string
	data string
}

// parseSSE splits a whole stream into events (LF or CRLF line ends).
func parseSSE(t *testing.T, b []byte) []sseEvent {
	t.Helper()
	b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	var out []sseEvent
	for block := range strings.SplitSeq(strings.TrimSuffix(string(b), "\n\n"), "\n\n") {
		var ev sseEvent
		for line := range strings.SplitSeq(block, "\n") {
			switch {
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.data = strings.TrimPrefix(line, "data: ")
			default:
				t.Fatalf("unexpected line %q in stream %q", line, b)
			}
		}
		out = append(out, ev)
	}
	return out
}
