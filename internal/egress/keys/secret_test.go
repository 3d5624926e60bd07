package keys

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/fakeplatform"
)

// planted is a key that must never be printed. Its middle is checked too,
// so that a printout of part of it is caught.
const planted = "sk-proj-PLANTEDk3y0fThe5ecretVa1ue9x8c7v6b5n4m3WXYZ"

// leaks reports whether s shows any of the planted secrets.
func leaks(s string, secrets ...string) bool {
	for _, sec := range secrets {
		if strings.Contains(s, sec) || strings.Contains(s, sec[8:len(sec)-4]) {
			return true
		}
	}
	return false
}

func TestSecretRedacted(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{planted, "sk-…WXYZ"},
		{"0123456789abcdef0123456789abcdef", "…cdef"},
		{"sk-short", "[redacted]"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := NewSecret(tt.in).Redacted(); got != tt.want {
			t.Errorf("Redacted(%d chars): got %q, want %q", len(tt.in), got, tt.want)
		}
	}
}

func TestSecretNeverPrints(t *testing.T) {
	s := NewSecret(planted)
	type holder struct {
		hidden Secret // unexported: fmt cannot call its methods
		Shown  Secret
	}
	l := Lease{KeyID: 3, Name: "env:K", Key: s, t: &ticket{st: &keyState{secret: s}}}
	values := []any{s, &s, l, &l, holder{s, s}, []Secret{s}, map[string]Secret{"k": s},
		KeyStatus{Redacted: s.Redacted()}}
	for _, v := range values {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%T %v"} {
			if out := fmt.Sprintf(verb, v); leaks(out, planted) {
				t.Errorf("fmt %s of %T: %q shows the key", verb, v, out)
			}
		}
		if out, err := json.Marshal(v); err == nil && leaks(string(out), planted) {
			t.Errorf("json of %T: %s shows the key", v, out)
		}
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "key", s, "lease", l)
	if leaks(buf.String(), planted) {
		t.Errorf("slog: %s shows the key", buf.String())
	}
	if s.Reveal() != planted {
		t.Fatal("Reveal does not return the value")
	}
}

// TestNoSecretInErrorsOrEvents drives every path that builds an error or
// an event with the planted key and token in play, and greps them.
func TestNoSecretInErrorsOrEvents(t *testing.T) {
	const token = "tok-PLANTEDserviceT0kenValue0123456789abcdefXYZ"
	var texts []string
	log := &eventLog{}
	record := func(err error) {
		if err != nil {
			texts = append(texts, err.Error(), fmt.Sprintf("%+v", err))
		}
	}

	// Static: refused configuration, every rotation path, no key left.
	_, err := NewStatic([]StaticKey{
		{Source: "env:A", Key: NewSecret(planted)}, {Source: "env:B", Key: NewSecret(planted)},
	}, Options{})
	record(err)
	p, err := NewStatic([]StaticKey{{Source: "env:A", Key: NewSecret(planted),
		Limits: Limits{DailyTokens: 10}}}, Options{OnEvent: log.add})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []Outcome{{Status: 429}, {Status: 500}, {Status: 200, Tokens: 10},
		{Status: 429, InsufficientQuota: true}, {Status: 401}} {
		l, err := p.Acquire(context.Background(), "m", 0)
		record(err)
		p.Report(l, o)
		texts = append(texts, l.String(), fmt.Sprintf("%+v", p.Status()))
	}
	_, err = p.Acquire(context.Background(), "m", 0)
	record(err)

	// Leased: answers that put the key where a value is quoted.
	answers := []string{
		`{"key_id":"` + planted + `","api_key":"x","expires_at":"2099-01-01T00:00:00Z"}`,
		`{"key_id":1,"api_key":"` + planted + `","expires_at":"` + planted + `"}`,
		`{"key_id":1,"api_key":"` + planted + `","expires_at":"2000-01-01T00:00:00Z"}`,
		`{"key_id":1,"api_key":` + `["` + planted + `"]}`,
		`{"success":false,"message":"` + planted + `"}`,
		`{"key_id":1,"api_key":"` + planted + `","expires_at":"2099-01-01T00:00:00Z",` +
			`"usage_limits":{"rpm_limit":"` + planted + `"}}`,
		`["` + planted + `"`,
	}
	for _, a := range answers {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte(a))
		}))
		lp, err := NewLeased(LeaseOptions{PlatformURL: srv.URL, AutomationID: 1,
			Token: NewSecret(token), Client: srv.Client()})
		if err != nil {
			t.Fatal(err)
		}
		_, err = lp.Acquire(context.Background(), "m", 0)
		if err == nil {
			t.Errorf("answer %d: got a lease, want an error", len(texts))
		}
		record(err)
		srv.Close()
	}

	// Leased: a key used, rejected and leased again, the platform refusing.
	env := newLeased(t, []fakeplatform.Key{{ID: 5, APIKey: planted}}, func(o *LeaseOptions) {
		o.Token = NewSecret(token)
		o.OnEvent = log.add
	})
	env.platform.AddAutomation(testAutomation, token)
	l, err := env.pool.Acquire(context.Background(), "m", 0)
	record(err)
	texts = append(texts, l.String())
	env.pool.Report(l, Outcome{Status: 403})
	env.clk.Advance(time.Minute)
	_, err = env.pool.Acquire(context.Background(), "m", 0)
	record(err)
	env.platform.AddAutomation(testAutomation, "another")
	env.clk.Advance(time.Minute)
	_, err = env.pool.Acquire(context.Background(), "m", 0)
	record(err)
	if !errors.Is(err, ErrPlatformRefused) {
		t.Fatalf("wrong token: got %v, want ErrPlatformRefused", err)
	}

	for _, e := range log.all() {
		texts = append(texts, e.String(), fmt.Sprintf("%+v", e))
	}
	if len(texts) < 20 {
		t.Fatalf("only %d texts checked", len(texts))
	}
	for _, s := range texts {
		if leaks(s, planted, token) {
			t.Errorf("shows a secret: %q", s)
		}
	}
}
