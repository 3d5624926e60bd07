package keys

import (
	"net/http"
	"testing"
	"time"
)

func TestParseResetDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1s", time.Second, true},
		{"6m0s", 6 * time.Minute, true},
		{"20ms", 20 * time.Millisecond, true},
		{"1m30.951s", 90951 * time.Millisecond, true},
		{"1h2m3.5s", time.Hour + 2*time.Minute + 3500*time.Millisecond, true},
		{"2d", 48 * time.Hour, true},
		{"0s", 0, true},
		{"1.5", 1500 * time.Millisecond, true},
		{" 7 ", 7 * time.Second, true},
		{".5s", 500 * time.Millisecond, true},
		{"0.0000000019s", time.Nanosecond, true},
		{"250us", 250 * time.Microsecond, true},
		{"250µs", 250 * time.Microsecond, true},
		{"168h", 168 * time.Hour, true},
		{"", 0, false},
		{"s", 0, false},
		{".s", 0, false},
		{"-1s", 0, false},
		{"+1s", 0, false},
		{"1e3s", 0, false},
		{"1s2", 0, false},
		{"1 s", 0, false},
		{"1x", 0, false},
		{"169h", 0, false},
		{"8d", 0, false},
		{"9999999999999s", 0, false},
		{"1.5.5s", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseResetDuration(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseResetDuration(%q): got %s, %v; want %s, ok=%t",
				tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func FuzzParseResetDuration(f *testing.F) {
	for _, s := range []string{"1s", "6m0s", "20ms", "1m30.951s", "2d", "1.5", "-1s",
		"9999999999999s", "0.0000000001s", "1h2m3.5s", "µs", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseResetDuration(s)
		if err != nil {
			if d != 0 {
				t.Fatalf("%q: error %v with duration %s", s, err, d)
			}
			return
		}
		if d < 0 || d > MaxResetDuration {
			t.Fatalf("%q: got %s, out of [0, %s]", s, d, MaxResetDuration)
		}
		// What Go prints for a duration reads back the same.
		if back, err := ParseResetDuration(d.String()); err != nil || back != d {
			t.Fatalf("%q: %s printed as %q reads back as %s, %v", s, d, d.String(), back, err)
		}
	})
}

func TestOutcomeFromResponse(t *testing.T) {
	now := time.Date(2025, 3, 14, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		status    int
		header    http.Header
		body      string
		wantRA    time.Duration
		wantReset time.Duration // from now; 0 means none
		wantQuota bool
	}{
		{"ok", 200, http.Header{"X-Ratelimit-Reset-Requests": {"1s"}}, "",
			0, time.Second, false},
		{"quota by code", 429, nil,
			`{"error":{"code":"insufficient_quota","type":"requests"}}`, 0, 0, true},
		{"quota by type", 429, nil,
			`{"error":{"code":null,"type":"insufficient_quota"}}`, 0, 0, true},
		{"quota in a cut body", 429, nil,
			`{"error":{"message":"You exceeded","type":"insufficient_quota","par`, 0, 0, true},
		{"rate limit is not quota", 429, nil,
			`{"error":{"code":"rate_limit_exceeded","message":"insufficient_quota?"}}`,
			0, 0, false},
		{"quota ignored on success", 200, nil,
			`{"error":{"code":"insufficient_quota"}}`, 0, 0, false},
		{"past retry date", 429, http.Header{"Retry-After": {"Mon, 02 Jan 2006 15:04:05 GMT"}},
			"", 0, 0, false},
		{"garbage headers", 429, http.Header{
			"Retry-After": {"soon"}, "Retry-After-Ms": {"-5"},
			"X-Ratelimit-Reset-Tokens": {"later"},
		}, "", 0, 0, false},
		{"negative retry", 429, http.Header{"Retry-After": {"-3"}}, "", 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := OutcomeFromResponse(tt.status, tt.header, []byte(tt.body), now)
			var reset time.Duration
			if !o.ResetAt.IsZero() {
				reset = o.ResetAt.Sub(now)
			}
			if o.Status != tt.status || o.RetryAfter != tt.wantRA || reset != tt.wantReset ||
				o.InsufficientQuota != tt.wantQuota {
				t.Fatalf("got %+v, want retry %s reset +%s quota %t",
					o, tt.wantRA, tt.wantReset, tt.wantQuota)
			}
		})
	}
}

func FuzzOutcomeFromResponse(f *testing.F) {
	f.Add(429, "7", "6m0s", "0", `{"error":{"code":"insufficient_quota"}}`)
	f.Add(500, "Mon, 02 Jan 2006 15:04:05 GMT", "1s", "", `{`)
	f.Add(429, "1e308", "99999h", "x", `null`)
	now := time.Date(2025, 3, 14, 10, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, status int, ra, reset, remaining, body string) {
		h := http.Header{
			"Retry-After": {ra}, "Retry-After-Ms": {ra},
			"X-Ratelimit-Reset-Tokens": {reset}, "X-Ratelimit-Remaining-Tokens": {remaining},
		}
		o := OutcomeFromResponse(status, h, []byte(body), now)
		if o.RetryAfter < 0 || o.RetryAfter > MaxResetDuration {
			t.Fatalf("retry after %s out of range", o.RetryAfter)
		}
		if !o.ResetAt.IsZero() && (o.ResetAt.Before(now) || o.ResetAt.Sub(now) > MaxResetDuration) {
			t.Fatalf("reset at %s out of range", o.ResetAt)
		}
	})
}
