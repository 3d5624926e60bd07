package httpx

import (
	"math"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestError(t *testing.T) {
	rec := httptest.NewRecorder()
	Error(rec, http.StatusTeapot, "short and fixed")
	if rec.Code != http.StatusTeapot {
		t.Errorf("got status %d, want 418", rec.Code)
	}
	if got := rec.Body.String(); got != "{\"detail\":\"short and fixed\"}\n" {
		t.Errorf("got body %q", got)
	}
	for k, want := range map[string]string{
		"Content-Type": "application/json", "Cache-Control": "no-store",
	} {
		if got := rec.Header().Get(k); got != want {
			t.Errorf("got %s %q, want %q", k, got, want)
		}
	}
}

func TestClientAddrIgnoresForwardingHeaders(t *testing.T) {
	tests := []struct {
		name, remote, want string
	}{
		{"ipv4", "192.0.2.7:5555", "192.0.2.7"},
		{"ipv6", "[2001:db8::1]:443", "2001:db8::1"},
		{"no port", "unix-socket", "unix-socket"},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tt.remote
		r.Header.Set("X-Forwarded-For", "127.0.0.1")
		r.Header.Set("X-Real-Ip", "127.0.0.1")
		if got := ClientAddr(r); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "1", -time.Second: "1", time.Millisecond: "1", time.Second: "1",
		1500 * time.Millisecond: "2", time.Minute: "60",
		time.Duration(math.MaxInt64): "9223372037",
	} {
		if got := RetryAfter(d); got != want {
			t.Errorf("RetryAfter(%v) = %q, want %q", d, got, want)
		}
	}
}
