package forward

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// python3 returns the interpreter's path. It skips the test when there is
// none, unless the CI variable is set: CI must run it.
func python3(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("python3 is required in CI: %v", err)
		}
		t.Skipf("python3 not found: %v", err)
	}
	return path
}

// fakeChat answers chat completions locally, plain or streamed; it never
// forwards anything.
type fakeChat struct {
	mu   sync.Mutex
	reqs []string // "METHOD host path tls=bool auth=bool"
}

func (f *fakeChat) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Model  string `json:"model"`
		Stream bool   `json:"stream"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&body); err != nil {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.reqs = append(f.reqs, fmt.Sprintf("%s %s %s tls=%v stream=%v", r.Method, r.Host,
		r.URL.Path, r.TLS != nil, body.Stream))
	f.mu.Unlock()

	if !body.Stream {
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"id":"chatcmpl-1","object":"chat.completion","model":%q,`+
			`"choices":[{"index":0,"message":{"role":"assistant",`+
			`"content":"hello from the sidecar"},"finish_reason":"stop"}],`+
			`"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}`, body.Model)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	rc := http.NewResponseController(w)
	for _, part := range []string{"hel", "lo ", "stream"} {
		_, _ = fmt.Fprintf(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":%q}}]}\n\n",
			part)
		_ = rc.Flush()
	}
	_, _ = fmt.Fprint(w, "data: [DONE]\n\n")
}

func (f *fakeChat) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.reqs...)
}

// runPython runs testdata/openai_client.py in mode with an environment
// holding only the proxy and the CA, and returns its output.
func runPython(t *testing.T, mode, proxyAddr, caPath string) (string, error) {
	t.Helper()
	py := python3(t)
	script, err := filepath.Abs(filepath.Join("testdata", "openai_client.py"))
	if err != nil {
		t.Fatal(err)
	}
	proxyURL := "http://" + proxyAddr
	emptyDir := t.TempDir() // SSL_CERT_DIR: no system CA directory
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	// -I: isolated mode, no user site or PYTHON* variables.
	cmd := exec.CommandContext(ctx, py, "-I", script, mode, proxyURL)
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + t.TempDir(),
		"HTTPS_PROXY=" + proxyURL,
		"HTTP_PROXY=" + proxyURL,
		"NO_PROXY=",
		"SSL_CERT_FILE=" + caPath,
		"SSL_CERT_DIR=" + emptyDir,
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestPythonClientWithHardCodedURL is the forward-proxy showcase: a Python
// app calling https://api.openai.com (hard-coded) through HTTPS_PROXY,
// trusting only the local CA, reaches the local handler behind the proxy.
// The script refuses to send anything unless its https proxy is the
// loopback proxy, so the real api.openai.com is never contacted.
func TestPythonClientWithHardCodedURL(t *testing.T) {
	python3(t)
	ca, caPath := newTestCA(t)
	chat := &fakeChat{}
	dialer := &recordingDialer{}
	_, addr, _ := startProxy(t, Options{
		CA:        ca,
		Intercept: map[string]http.Handler{"api.openai.com": chat},
		Dial:      dialer.Dial,
	})

	out, err := runPython(t, "chat", addr, caPath)
	if err != nil {
		t.Fatalf("python client: %v\n%s", err, out)
	}
	for _, want := range []string{"chat: hello from the sidecar", "stream: hello stream 3"} {
		if !strings.Contains(out, want) {
			t.Errorf("python output %q: want %q", out, want)
		}
	}
	want := []string{
		"POST api.openai.com /v1/chat/completions tls=true stream=false",
		"POST api.openai.com /v1/chat/completions tls=true stream=true",
	}
	if got := chat.seen(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("handler saw %q, want %q", got, want)
	}
	if d := dialer.dialed(); len(d) != 0 {
		t.Errorf("proxy dialed %v, want nothing", d)
	}
}

// TestPythonConnectToUnconfiguredHostRefused: the same app asking for
// another host gets a 403 from the proxy, and nothing is dialled.
func TestPythonConnectToUnconfiguredHostRefused(t *testing.T) {
	python3(t)
	ca, caPath := newTestCA(t)
	chat := &fakeChat{}
	dialer := &recordingDialer{}
	_, addr, _ := startProxy(t, Options{
		CA:        ca,
		Intercept: map[string]http.Handler{"api.openai.com": chat},
		Dial:      dialer.Dial,
	})

	out, err := runPython(t, "refused", addr, caPath)
	if err != nil {
		t.Fatalf("python client: %v\n%s", err, out)
	}
	if !strings.Contains(out, "refused:") || !strings.Contains(out, "403") {
		t.Errorf("python output %q: want a 403 refusal", out)
	}
	if d := dialer.dialed(); len(d) != 0 {
		t.Errorf("proxy dialed %v, want nothing", d)
	}
	if n := len(chat.seen()); n != 0 {
		t.Errorf("handler saw %d requests, want 0", n)
	}
}

// TestPythonScriptRefusesWithoutLoopbackProxy checks the script's guard:
// with no proxy in its environment it exits 3 before sending anything.
func TestPythonScriptRefusesWithoutLoopbackProxy(t *testing.T) {
	py := python3(t)
	_, caPath := newTestCA(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "-I", filepath.Join("testdata", "openai_client.py"),
		"chat", "http://127.0.0.1:1")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "SSL_CERT_FILE=" + caPath}
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Fatalf("got %v (%s), want exit status 3", err, out)
	}
	if !strings.Contains(string(out), "https proxy is ''") {
		t.Errorf("output %q: want the proxy check to fail", out)
	}
}
