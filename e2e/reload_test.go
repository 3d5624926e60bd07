package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/e2etest"
)

// reloadWait bounds waiting for the sidecar to notice and apply a change:
// the watcher's quiet period plus a race-enabled binary on a busy machine.
const reloadWait = 30 * time.Second

// The log messages a reload writes.
const (
	msgReloaded     = "configuration reloaded"
	msgReloadFailed = "reload failed; the running configuration stays"
	msgRestart      = "reload: settings need a restart to change; " +
		"their running values stay in effect"
)

// logRecord is the part of a sidecar log line the reload tests read.
type logRecord struct {
	Msg      string   `json:"msg"`
	Level    string   `json:"level"`
	Problems []string `json:"problems"`
	Changed  []string `json:"changed"`
	Restart  []string `json:"restart_required"`
}

// waitRecord waits for the n-th (1-based) log line with message msg and
// returns it.
func waitRecord(t *testing.T, s *e2etest.Sidecar, msg string, n int) logRecord {
	t.Helper()
	var rec logRecord
	seen := 0
	_, err := s.WaitLine(reloadWait, func(l e2etest.Line) bool {
		var r logRecord
		if l.Stream != e2etest.Stderr || json.Unmarshal([]byte(l.Text), &r) != nil ||
			r.Msg != msg {
			return false
		}
		seen++
		rec = r
		return seen == n
	})
	if err != nil {
		t.Fatalf("waiting for log line %d %q: %v", n, msg, err)
	}
	return rec
}

// countRecords counts the log lines with message msg so far.
func countRecords(s *e2etest.Sidecar, msg string) int {
	n := 0
	for _, l := range s.Lines() {
		var r logRecord
		if json.Unmarshal([]byte(l.Text), &r) == nil && r.Msg == msg {
			n++
		}
	}
	return n
}

// status sends GET path with token (none when empty) and returns the
// answer's status.
func status(ctx context.Context, t *testing.T, s *stack, path, token string) int {
	t.Helper()
	p := e2etest.NewPlatform(s.sidecar.PublicURL(), token)
	return do(ctx, t, p, e2etest.Request{Method: http.MethodGet, Path: path,
		WithToken: token != ""}).Status
}

// writeAtomically replaces path by renaming a complete new file over it,
// as editors and configuration tools do.
func writeAtomically(t *testing.T, path, text string) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestReload runs the real binary in front of the Python example and
// reloads its configuration while it serves: a broken edit changes
// nothing and is reported whole, a fixed edit with a new service token
// takes effect, a token rotated in a secret file takes effect on SIGHUP,
// and an event stream open across a reload runs to its end.
func TestReload(t *testing.T) {
	tc := apps[0]
	tc.app.Require(t)
	ctx := testContext(t)

	// The second token comes from a file outside the config's directory:
	// changing it is invisible to the file watch, as with a mounted Secret.
	tokenFile := filepath.Join(t.TempDir(), "token")
	fileToken := newToken(t)
	if err := os.WriteFile(tokenFile, []byte(fileToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tokensLine := `tokens = ["env:ZIMMER_SERVICE_TOKEN"]`
	s := startStack(t, tc, nil, e2etest.Edit{Old: tokensLine, Count: 1,
		New: fmt.Sprintf(`tokens = ["env:ZIMMER_SERVICE_TOKEN", "file:%s"]`, tokenFile)})
	good, err := os.ReadFile(s.config)
	if err != nil {
		t.Fatal(err)
	}
	const protected = "/debug/echo"
	for _, tok := range []string{s.token, fileToken} {
		if got := status(ctx, t, s, protected, tok); got != http.StatusOK {
			t.Fatalf("before any reload: %s got %d, want 200", protected, got)
		}
	}

	// 1. A broken edit in place: every problem in one line, nothing changes.
	broken := strings.Replace(string(good), `version = "1.4.0"`, `version = ""`, 1) +
		"\n[[route]]\npath = \"no-slash\"\n"
	if err := os.WriteFile(s.config, []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	rec := waitRecord(t, s.sidecar, msgReloadFailed, 1)
	if rec.Level != "ERROR" || len(rec.Problems) != 2 ||
		!strings.Contains(rec.Problems[0], "automation.version") ||
		!strings.Contains(rec.Problems[1], "no-slash") {
		t.Errorf("failed reload: got %+v, want ERROR with the version and the route "+
			"problems", rec)
	}
	if got := status(ctx, t, s, protected, s.token); got != http.StatusOK {
		t.Errorf("after a broken edit: %s got %d, want 200", protected, got)
	}
	if r, class, err := s.platform.Health(ctx, s.zimmer("health")); err != nil ||
		!strings.Contains(string(r.Body), `"1.4.0"`) {
		t.Errorf("after a broken edit /health: %v %v %v, want version 1.4.0", r, class, err)
	}

	// 2. The fixed file adds a token (as its SHA-256 digest) and changes a
	// restart-only setting; it is renamed into place.
	newTok := newToken(t)
	sum := sha256.Sum256([]byte(newTok))
	fixed := strings.Replace(string(good), fmt.Sprintf(`"file:%s"]`, tokenFile),
		fmt.Sprintf(`"file:%s", "sha256:%s"]`, tokenFile, hex.EncodeToString(sum[:])), 1)
	fixed = strings.Replace(fixed, "default_demo_tokens = 5", "default_demo_tokens = 7", 1)
	writeAtomically(t, s.config, fixed)
	rec = waitRecord(t, s.sidecar, msgReloaded, 1)
	if !slices.Equal(rec.Changed, []string{"auth.tokens"}) {
		t.Errorf("reloaded: changed %v, want [auth.tokens]", rec.Changed)
	}
	if warn := waitRecord(t, s.sidecar, msgRestart, 1); !slices.Equal(warn.Restart,
		[]string{"ledger.default_demo_tokens"}) {
		t.Errorf("restart_required: got %v, want [ledger.default_demo_tokens]",
			warn.Restart)
	}
	for name, tok := range map[string]string{"env": s.token, "file": fileToken,
		"new": newTok} {
		if got := status(ctx, t, s, protected, tok); got != http.StatusOK {
			t.Errorf("after the fix, the %s token: got %d, want 200", name, got)
		}
	}

	// 3. An open stream, then the file token rotates and SIGHUP reloads.
	id := int64(4242)
	provision(ctx, t, s, id, 10)
	const n = 10 // events 500 ms apart: the reload lands well inside
	st, err := openStream(ctx, s.platform, tc.stream(id, n, 500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	first, err := st.next()
	if err != nil {
		t.Fatalf("first event: %v", err)
	}

	rotated := newToken(t)
	if err := os.WriteFile(tokenFile, []byte(rotated+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := status(ctx, t, s, protected, rotated); got != http.StatusUnauthorized {
		t.Errorf("a rotated secret before SIGHUP: got %d, want 401", got)
	}
	before := countRecords(s.sidecar, msgReloaded)
	if err := s.sidecar.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitRecord(t, s.sidecar, msgReloaded, before+1)
	reloadedAt := time.Now()
	if got := status(ctx, t, s, protected, rotated); got != http.StatusOK {
		t.Errorf("the rotated secret after SIGHUP: got %d, want 200", got)
	}
	if got := status(ctx, t, s, protected, fileToken); got != http.StatusUnauthorized {
		t.Errorf("the replaced secret after SIGHUP: got %d, want 401", got)
	}

	rest, err := st.all()
	if err != nil {
		t.Fatalf("the stream was cut across the reload: %v after %d more events",
			err, len(rest))
	}
	events := append([]sseEvent{first}, rest...)
	data := 0
	for _, ev := range events {
		if ev.name == tc.streamEvent {
			data++
		}
	}
	if data != n || len(events) != n+1 {
		t.Errorf("stream across the reload: got %d %q events of %d, want %d and a final one",
			data, tc.streamEvent, len(events), n)
	}
	if last := events[len(events)-1].at; !last.After(reloadedAt) {
		t.Errorf("the stream ended before the reload was applied: " +
			"it did not test a reload during a stream")
	}
	if countRecords(s.sidecar, msgReloadFailed) != 1 {
		t.Errorf("failed reloads: got %d, want only the broken edit's",
			countRecords(s.sidecar, msgReloadFailed))
	}
}
