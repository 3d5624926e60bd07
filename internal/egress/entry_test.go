package egress

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// okUpstream answers every call with a chat completion of 1+1 tokens.
func okUpstream(t *testing.T) (*httptest.Server, *upstreamLog) {
	t.Helper()
	return newUpstream(t, func(w http.ResponseWriter, _ *http.Request, _ seenRequest) {
		writeJSONAnswer(w, 200, chatAnswer(1, 1))
	})
}

// A path with an empty segment is refused in OpenAI's shape before the
// upstream: it could be cleaned into a redirect, or read as a host.
func TestEmptyPathSegmentRefused(t *testing.T) {
	t.Parallel()
	up, seen := okUpstream(t)
	e := newEnv(t, up.URL, 1, nil)
	addr := strings.TrimPrefix(e.srv.URL, "http://")
	for _, path := range []string{"//x", "/v1//chat/completions", "//127.0.0.1/v1/models"} {
		raw := "POST " + path + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
			"Content-Length: " + strconv.Itoa(len(chatBody)) + "\r\n\r\n" + chatBody
		resp, body := rawRequest(t, addr, raw)
		if resp.StatusCode != 400 || decodeError(t, body).Error.Code != "invalid_path" {
			t.Errorf("%s: got %d %q, want 400 invalid_path", path, resp.StatusCode, body)
		}
	}
	if n := len(seen.all()); n != 0 {
		t.Errorf("the upstream got %d requests", n)
	}
	// A trailing slash is not an empty inner segment.
	if resp, _ := e.do("GET", "/v1/models/", "", nil); resp.StatusCode != 200 {
		t.Errorf("trailing slash: status %d, want the upstream's 200", resp.StatusCode)
	}
	e.wait()
}

// failingBody fails the test when the handler reads it.
type failingBody struct{ t *testing.T }

func (b failingBody) Read([]byte) (int, error) {
	b.t.Error("the body of a browser request was read")
	return 0, io.EOF
}

// C-browser: a request a web page could make (Origin, Sec-Fetch-Site, a
// browser's Sec-Fetch-Mode) is refused with 403 before its body is read;
// Node's fetch, which sends "Sec-Fetch-Mode: cors" alone, is served.
func TestBrowserRequestsRefused(t *testing.T) {
	t.Parallel()
	up, seen := okUpstream(t)
	e := newEnv(t, up.URL, 1, nil)
	tests := []struct {
		name string
		hdr  http.Header
	}{
		{"origin", http.Header{"Origin": {"https://evil.example"}}},
		{"null origin", http.Header{"Origin": {"null"}}},
		{"sec-fetch-site", http.Header{"Sec-Fetch-Site": {"cross-site"}}},
		{"sec-fetch-mode no-cors", http.Header{"Sec-Fetch-Mode": {"no-cors"}}},
		{"sec-fetch-mode navigate", http.Header{"Sec-Fetch-Mode": {"navigate"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequestWithContext(t.Context(), "POST",
				"/v1/chat/completions", failingBody{t})
			req.Header.Set("Content-Type", "text/plain")
			for k, v := range tt.hdr {
				req.Header[k] = v
			}
			rec := httptest.NewRecorder()
			e.h.ServeHTTP(rec, req)
			if rec.Code != 403 || decodeError(t, rec.Body.String()).Error.Code !=
				"browser_request_refused" {
				t.Errorf("got %d %s, want 403 browser_request_refused", rec.Code, rec.Body)
			}
		})
	}
	if n := len(seen.all()); n != 0 {
		t.Errorf("the upstream got %d requests", n)
	}
	resp, body := e.do("POST", "/v1/chat/completions", chatBody,
		http.Header{"Sec-Fetch-Mode": {"cors"}})
	if resp.StatusCode != 200 {
		t.Errorf("Node fetch (Sec-Fetch-Mode: cors alone): got %d %s, want 200",
			resp.StatusCode, body)
	}
	e.wait()
}

// A body trickled slower than BodyTimeout allows gets 408 in OpenAI's
// shape, and the upstream is not called.
func TestBodyTimeout(t *testing.T) {
	t.Parallel()
	up, seen := okUpstream(t)
	e := newEnv(t, up.URL, 1, func(o *Options) { o.BodyTimeout = 200 * time.Millisecond })
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = io.WriteString(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"+
		"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"model\":")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer while the body trickles: %v\n%s", err, e.logs)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 408 || decodeError(t, string(b)).Error.Code != "request_timeout" {
		t.Errorf("got %d %s, want 408 request_timeout", resp.StatusCode, b)
	}
	if n := len(seen.all()); n != 0 {
		t.Errorf("the upstream got %d requests", n)
	}
	e.wait()
}
