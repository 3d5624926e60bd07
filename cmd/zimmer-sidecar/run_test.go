package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/config"
)

// logLines collects the JSON log lines written to a pipe and hands over
// the "listening" line as soon as it is written.
type logLines struct {
	listening chan map[string]any
	done      chan struct{}

	mu    sync.Mutex
	lines []string
}

// readLog reads r line by line until it ends.
func readLog(r io.Reader) *logLines {
	l := &logLines{
		listening: make(chan map[string]any, 1),
		done:      make(chan struct{}),
	}
	go func() {
		defer close(l.done)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			l.mu.Lock()
			l.lines = append(l.lines, sc.Text())
			l.mu.Unlock()
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == "listening" {
				l.listening <- m
			}
		}
		_, _ = io.Copy(io.Discard, r) // a scan error must not block the writer
	}()
	return l
}

func (l *logLines) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// TestRunSidecar starts the whole command in-process on loopback ports,
// serves a few requests, uses the ledger CLI against it and stops it
// through its context.
func TestRunSidecar(t *testing.T) {
	t.Parallel()
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "app:"+r.URL.Path)
	}))
	t.Cleanup(app.Close)
	path := configFile(t, "127.0.0.1:0", "127.0.0.1:0", app.URL)

	pr, pw := io.Pipe()
	logs := readLog(pr)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"run", "-config", path}, io.Discard, pw)
		_ = pw.Close()
	}()

	var listening map[string]any
	select {
	case listening = <-logs.listening:
	case err := <-done:
		t.Fatalf("run returned %v before listening; log:\n%s", err, logs.all())
	case <-time.After(10 * time.Second):
		t.Fatal("no listening line within 10s")
	}
	public, _ := listening["public"].(string)
	adminAddr, _ := listening["admin"].(string)
	if !strings.HasPrefix(public, "127.0.0.1:") || !strings.HasPrefix(adminAddr, "127.0.0.1:") {
		t.Fatalf("listening line names public %q admin %q", public, adminAddr)
	}
	if listening["version"] != version {
		t.Errorf("listening line has version %v, want %q", listening["version"], version)
	}

	// Serve: health, the app behind the proxy, a Zimmer endpoint.
	if code, body := statusOf(t, "http://"+public+"/health", nil); code != 200 ||
		!strings.Contains(body, `"version":"3.1.4"`) {
		t.Errorf("health: got %d %s", code, body)
	}
	if code, body := statusOf(t, "http://"+public+"/docs/a", nil); code != 200 ||
		body != "app:/docs/a" {
		t.Errorf("proxy: got %d %q, want the app's answer", code, body)
	}
	req, _ := http.NewRequest("POST", "http://"+public+"/provision",
		strings.NewReader(`{"user_automation_id": 7, "user_id": 70}`))
	req.Header.Set("X-Zimmer-Service-Token", testToken)
	resp, err := testClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("provision: got %d, want 200", resp.StatusCode)
	}
	if code, _ := statusOf(t, "http://"+adminAddr+"/readyz", nil); code != 200 {
		t.Errorf("readyz: got %d, want 200", code)
	}

	// The ledger CLI works against the running sidecar.
	stdout, stderr, err := runCmd(t, "ledger", "credit", "7", "4", "-admin", "http://"+adminAddr)
	if err != nil || !strings.Contains(stdout, `"paid_tokens": 4`) {
		t.Errorf("ledger credit: got %v, stdout %q, stderr %q", err, stdout, stderr)
	}

	// Stop: run returns nil and the log says the drain finished.
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run: got %v, want nil after a clean stop", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	<-logs.done
	lines := logs.all()
	joined := strings.Join(lines, "\n")
	if !strings.Contains(joined, `"msg":"drained"`) {
		t.Errorf("log lacks the drained line:\n%s", joined)
	}
	if strings.Contains(joined, testToken) {
		t.Errorf("the log contains the service token:\n%s", joined)
	}
	for _, l := range lines {
		if !json.Valid([]byte(l)) || !strings.Contains(l, `"version":"dev"`) {
			t.Errorf("log line is not JSON with the version: %s", l)
		}
	}
}

func TestRunSidecarErrors(t *testing.T) {
	t.Parallel()
	bad := writeFile(t, "bad.toml", "[listen]\npublic = \"nope\"\n")
	tests := []struct {
		name       string
		args       []string
		usage      bool
		wantStderr string
	}{
		{"bad flag", []string{"run", "-nope"}, true, "flag provided but not defined"},
		{"bad config, default command", []string{"-config", bad}, false,
			bad + ":2: listen.public"},
		{"missing config", []string{"run", "-config", bad + ".absent"}, false,
			"bad.toml.absent"},
	}
	for _, tt := range tests {
		_, stderr, err := runCmd(t, tt.args...)
		if err == nil || errors.Is(err, errUsage) != tt.usage {
			t.Errorf("%s: got %v, want usage error %v", tt.name, err, tt.usage)
		}
		if !strings.Contains(stderr, tt.wantStderr) {
			t.Errorf("%s: stderr %q lacks %q", tt.name, stderr, tt.wantStderr)
		}
	}
}

// TestRunRejectsArguments: `run FILE` reads like check-config's form but
// the file is silently ignored and the default config is loaded instead.
// Not parallel: it sets the environment.
func TestRunRejectsArguments(t *testing.T) {
	t.Setenv(config.EnvConfigPath, filepath.Join(t.TempDir(), "absent.toml"))
	good := configFile(t, "127.0.0.1:0", "127.0.0.1:0", "http://127.0.0.1:8000")
	_, _, err := runCmd(t, "run", good)
	if !errors.Is(err, errUsage) {
		t.Errorf("got %v, want errUsage", err)
	}
}
