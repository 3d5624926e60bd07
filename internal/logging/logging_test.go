package logging

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestRedactorMasksEverySecretPath(t *testing.T) {
	const token = "4f1c0d9e8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e"
	const key = "sk-proj-AbCdEfGhIjKlMnOpQrStUv"
	red := NewRedactor(token)
	var buf bytes.Buffer
	log := New(&buf, slog.LevelDebug, red)

	log.Info("token "+token+" seen",
		"header", "X-Zimmer-Service-Token: "+token,
		"authorization", "anything at all",
		"err", fmt.Errorf("upstream said: bad key %s", key),
		slog.Group("req", "query", "api_key="+key, "api_key", "plain"),
	)
	log.With("token", token).Debug("with attrs", "note", "Bearer "+key)

	out := buf.String()
	for _, secret := range []string{token, key, "anything at all", "plain"} {
		if strings.Contains(out, secret) {
			t.Errorf("log output contains secret %q:\n%s", secret, out)
		}
	}
	if got := strings.Count(out, Mask); got < 6 {
		t.Errorf("got %d masks, want at least 6:\n%s", got, out)
	}
}

func TestRedactorSetReplacesSecrets(t *testing.T) {
	red := NewRedactor("old-secret-value")
	red.Set("new-secret-value")
	if got := red.String("old-secret-value new-secret-value"); got !=
		"old-secret-value "+Mask {
		t.Errorf("got %q, want only the new secret masked", got)
	}
	red.Add("old-secret-value")
	if got := red.String("old-secret-value"); got != Mask {
		t.Errorf("got %q, want %q after Add", got, Mask)
	}
}

func TestRedactorOverlappingSecrets(t *testing.T) {
	red := NewRedactor("abcd", "abcdefgh")
	if got := red.String("xx abcdefgh yy"); got != "xx "+Mask+" yy" {
		t.Errorf("got %q, want the longer secret masked whole", got)
	}
}

func TestAccessLogLine(t *testing.T) {
	var buf bytes.Buffer
	log := New(&buf, slog.LevelInfo, NewRedactor())
	var observed string
	h := Access(log, true, func(ep string, status int, _ time.Duration) {
		observed = fmt.Sprintf("%s %d", ep, status)
	}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := FromContext(r.Context())
		info.SetUser(42)
		info.SetEndpoint("provision")
		if RequestID(r.Context()) != r.Header.Get(RequestIDHeader) {
			t.Error("request id in context differs from the forwarded header")
		}
		w.WriteHeader(http.StatusTeapot)
		_, _ = w.Write([]byte("hello"))
	}))

	req := httptest.NewRequest("POST", "/provision?api_key=sk-secretsecret", nil)
	req.Header.Set(RequestIDHeader, "abc-123")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)

	if got := rec.Header().Get(RequestIDHeader); got != "abc-123" {
		t.Errorf("got request id %q, want the caller's abc-123", got)
	}
	out := buf.String()
	for _, want := range []string{`"status":418`, `"bytes":5`, `"request_id":"abc-123"`,
		`"user_automation_id":42`, `"endpoint":"provision"`, `"path":"/provision"`} {
		if !strings.Contains(out, want) {
			t.Errorf("access line lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "sk-secret") || strings.Contains(out, "api_key") {
		t.Errorf("access line leaks the query string:\n%s", out)
	}
	if observed != "provision 418" {
		t.Errorf("got observed %q, want %q", observed, "provision 418")
	}
}

func TestRequestIDRejectsHostileValues(t *testing.T) {
	for _, in := range []string{"", "a b", `x"}`, strings.Repeat("a", 65), "é"} {
		got := requestID(in)
		if got == in || len(got) != 24 {
			t.Errorf("requestID(%q) = %q, want a fresh 24-char id", in, got)
		}
	}
	if got := requestID("ok_id-1.2"); got != "ok_id-1.2" {
		t.Errorf("got %q, want the plain id kept", got)
	}
}

func TestAccessDisabledStillObserves(t *testing.T) {
	var buf bytes.Buffer
	calls := 0
	h := Access(New(&buf, slog.LevelInfo, NewRedactor()), false,
		func(string, int, time.Duration) { calls++ },
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	if buf.Len() != 0 || calls != 1 {
		t.Errorf("got %d log bytes and %d observations, want 0 and 1", buf.Len(), calls)
	}
}

func TestParseLevel(t *testing.T) {
	tests := []struct {
		in   string
		want slog.Level
		err  bool
	}{
		{"debug", slog.LevelDebug, false}, {"", slog.LevelInfo, false},
		{"WARN", slog.LevelWarn, false}, {"error", slog.LevelError, false},
		{"loud", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseLevel(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("ParseLevel(%q) = %v, %v; want %v, err %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func FuzzRedactor(f *testing.F) {
	f.Add("token abcdef123456 Bearer xyzxyzxyzxyz", "abcdef123456")
	f.Add("sk-aaaaaaaaaaaaaaaa", "")
	f.Fuzz(func(t *testing.T, s, secret string) {
		if keyShapes.MatchString(s) && !mayHoldKeyShape(s) {
			t.Errorf("%q matches a key shape but the filter skips it", s)
		}
		red := NewRedactor(secret)
		out := red.String(s)
		if len(secret) >= 4 && strings.Contains(out, secret) &&
			!strings.Contains(Mask, secret) {
			t.Errorf("secret %q survives in %q", secret, out)
		}
		_ = errors.New(out)
	})
}

func TestRedactorMasksTelegramBotTokens(t *testing.T) {
	red := NewRedactor()
	const bot = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
	got := red.String("POST /bot" + bot + "/sendMessage")
	if strings.Contains(got, bot) || !strings.Contains(got, Mask) {
		t.Errorf("got %q, want the bot token masked", got)
	}
}

func TestMayHoldKeyShapeNeverHidesAMatch(t *testing.T) {
	for _, s := range []string{
		"sk-abcdefgh12345", "SK-ABCDEFGH12345",
		"Authorization: BEARER abcdefgh1234", "x bEaReR abcdefghijk",
		"123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw", "/plain/path", "",
	} {
		if keyShapes.MatchString(s) && !mayHoldKeyShape(s) {
			t.Errorf("%q matches a key shape but the filter skips it", s)
		}
	}
}

func BenchmarkRedactorPlainString(b *testing.B) {
	red := NewRedactor("4f1c0d9e8b7a6f5e4d3c2b1a0f9e8d7c")
	for b.Loop() {
		_ = red.String("/api/zimmer/usage/consume")
	}
}

// secretValuer is a LogValuer that resolves to a string holding a secret.
type secretValuer struct{ s string }

func (v secretValuer) LogValue() slog.Value { return slog.StringValue(v.s) }

func TestRedactorResolvesLogValuers(t *testing.T) {
	const token = "valuer-secret-0123456789"
	var buf bytes.Buffer
	log := New(&buf, slog.LevelInfo, NewRedactor(token))
	log.Info("m", "plain", "nothing to hide", "lazy", secretValuer{"x " + token})
	out := buf.String()
	if strings.Contains(out, token) || !strings.Contains(out, `"lazy":"x `+Mask+`"`) {
		t.Errorf("got %s, want the valuer's secret masked", out)
	}
	if !strings.Contains(out, `"plain":"nothing to hide"`) {
		t.Errorf("got %s, want the clean attribute kept", out)
	}
}

func TestMayHoldKeyShapeSkipsLabels(t *testing.T) {
	for _, s := range []string{"route:/chat/*", "12345:abc", "a:b:c", "127.0.0.1"} {
		if mayHoldKeyShape(s) {
			t.Errorf("mayHoldKeyShape(%q) = true, want false (no key shape fits)", s)
		}
	}
	if !mayHoldKeyShape("/bot123456:x") {
		t.Error("mayHoldKeyShape(/bot123456:x) = false, want true")
	}
}

func TestRedactorSetWhileLogging(t *testing.T) {
	red := NewRedactor("first-secret")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 200; i++ {
			red.Set("first-secret", fmt.Sprintf("other-secret-%d", i))
		}
	}()
	for i := 0; i < 200; i++ {
		if got := red.String("a first-secret b"); got != "a "+Mask+" b" {
			t.Fatalf("got %q while Set ran, want the secret masked", got)
		}
	}
	<-done
}

func TestAccessForwardsOneRequestID(t *testing.T) {
	var got []string
	h := Access(New(io.Discard, slog.LevelInfo, NewRedactor()), true, nil,
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			got = r.Header.Values(RequestIDHeader)
		}))
	for _, in := range [][]string{nil, {"abc"}, {"abc", "def"}, {"bad id"}} {
		req := httptest.NewRequest("GET", "/", nil)
		for _, v := range in {
			req.Header.Add(RequestIDHeader, v)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		echoed := rec.Header().Values(RequestIDHeader)
		if len(got) != 1 || len(echoed) != 1 || got[0] != echoed[0] {
			t.Errorf("sent %q: forwarded %q and echoed %q, want one and the same id",
				in, got, echoed)
		}
		if len(in) > 0 && in[0] == "abc" && got[0] != "abc" {
			t.Errorf("sent %q: forwarded %q, want the caller's abc kept", in, got)
		}
	}
}
