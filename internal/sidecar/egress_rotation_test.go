package sidecar

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/fakeopenai"
)

// The two static keys of the rotation tests, in configuration order: the
// pool tries keyFirst first.
const (
	keyFirst  = "sk-rotate-first-3e9b71c5d0a24f86"
	keySecond = "sk-rotate-second-8a62f0d4c1e9b537"
)

// twoKeysTOML configures two static keys. %q: the upstream, the outbox.
const twoKeysTOML = `
[egress]
listen = "127.0.0.1:0"
upstream = %q
keys = ["env:ZS_KEY_FIRST", "env:ZS_KEY_SECOND"]

[egress.outbox]
path = %q
`

// startTwoKeys runs a sidecar with two static keys in front of fake.
func startTwoKeys(t *testing.T, fake *fakeopenai.Server) *harness {
	t.Helper()
	up := httptest.NewServer(fake.Handler())
	t.Cleanup(up.Close)
	h := startHarness(t, params{
		extra: fmt.Sprintf(twoKeysTOML, up.URL, filepath.Join(t.TempDir(), "outbox.db")),
		env:   []string{"ZS_KEY_FIRST=" + keyFirst, "ZS_KEY_SECOND=" + keySecond},
	})
	h.waitReady()
	return h
}

// rotationCall makes one egress call, which must answer 200, and returns
// the keys the upstream saw for it, in order.
func rotationCall(t *testing.T, h *harness, fake *fakeopenai.Server, step string) []string {
	t.Helper()
	n := len(fake.Requests())
	a := h.do("POST", h.egressURL("/v1/chat/completions"), chatBody(2, false), nil)
	if a.status != http.StatusOK {
		t.Fatalf("%s: got %d %s, want 200", step, a.status, a.body)
	}
	noSecretIn(t, step+": the answer", a.body, keyFirst, keySecond)
	var used []string
	for _, r := range fake.Requests()[n:] {
		used = append(used, keyName(r.Key))
	}
	return used
}

// keyName names a key the upstream saw without printing it.
func keyName(k string) string {
	switch k {
	case keyFirst:
		return "first"
	case keySecond:
		return "second"
	}
	return "other"
}

// TestEgressRotationOnRevokedKey: the first key is revoked (401); the app
// still gets 200, served with the second key, and later calls never try
// the first key again.
func TestEgressRotationOnRevokedKey(t *testing.T) {
	t.Parallel()
	fake := fakeopenai.New(fakeopenai.Options{Keys: []string{keyFirst, keySecond}})
	fake.SetKeyState(keyFirst, fakeopenai.State{Kind: fakeopenai.Revoked})
	h := startTwoKeys(t, fake)

	used := rotationCall(t, h, fake, "call 1")
	if fmt.Sprint(used) != "[first second]" {
		t.Fatalf("call 1 used keys %v, want [first second]", used)
	}
	for i := 2; i <= 5; i++ {
		used = rotationCall(t, h, fake, fmt.Sprint("call ", i))
		if fmt.Sprint(used) != "[second]" {
			t.Errorf("call %d used keys %v, want [second]: the first is disabled", i, used)
		}
	}
	if st := fake.Stats(keyFirst); st.Requests != 1 {
		t.Errorf("the revoked key was sent %d times, want 1", st.Requests)
	}
	if err := h.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	noSecretIn(t, "the log", h.logs.String(), keyFirst, keySecond)
}

// TestEgressRotationOnRateLimit: the first key answers 429 with a
// Retry-After of 2s; the app still gets 200 with the second key, calls
// that start within the cooldown use only the second key, and a call
// after the cooldown ends uses the first again (it is the least used).
func TestEgressRotationOnRateLimit(t *testing.T) {
	t.Parallel()
	const cooldown = 2 * time.Second
	fake := fakeopenai.New(fakeopenai.Options{Keys: []string{keyFirst, keySecond}})
	fake.SetKeyState(keyFirst, fakeopenai.State{
		Kind: fakeopenai.RateLimited, RetryAfter: cooldown, Times: 1,
	})
	h := startTwoKeys(t, fake)

	// The 429 happens during call 1, so the cooldown ends at or after
	// start + 2s, and at or before end + 2s.
	start := time.Now()
	used := rotationCall(t, h, fake, "call 1")
	end := time.Now()
	if fmt.Sprint(used) != "[first second]" {
		t.Fatalf("call 1 used keys %v, want [first second]", used)
	}

	// Calls that start within the cooldown do not use the first key.
	checked := 0
	for i := 2; i <= 5; i++ {
		began := time.Now()
		used := rotationCall(t, h, fake, fmt.Sprint("call ", i))
		if began.Before(start.Add(cooldown)) {
			checked++
			if fmt.Sprint(used) != "[second]" {
				t.Errorf("call %d, within the cooldown, used keys %v, want [second]", i, used)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no call started within the cooldown; the machine is too slow for this test")
	}

	// After the cooldown the first key, the least used, serves again.
	sleepUntil(end.Add(cooldown))
	if used := rotationCall(t, h, fake, "after the cooldown"); fmt.Sprint(used) != "[first]" {
		t.Errorf("after the cooldown the call used keys %v, want [first]", used)
	}
	if st := fake.Stats(keyFirst); st.Requests != 2 {
		t.Errorf("the first key was sent %d times, want 2 (the 429 and after)", st.Requests)
	}
}
