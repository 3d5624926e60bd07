package keys

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestDecodeLease(t *testing.T) {
	now := time.Date(2025, 3, 14, 10, 0, 0, 0, time.UTC)
	exp := time.Date(2025, 3, 14, 11, 0, 0, 0, time.UTC)
	const k = "sk-test0123456789abcdefghijklmnop"
	tests := []struct {
		name    string
		body    string
		wantErr error
		want    leaseAnswer
	}{
		{"guide answer", `{"success":true,"key_id":123,"api_key":"` + k + `","model":"gpt-4",
			"expires_at":"2025-03-14T11:00:00Z","usage_limits":{"rpm_limit":60,
			"daily_token_limit":100000}}`, nil,
			leaseAnswer{keyID: 123, model: "gpt-4", expiresAt: exp,
				limits: Limits{RPM: 60, DailyTokens: 100000}}},
		{"quoted id, python time, null limits", `{"key_id":"9","api_key":"` + k + `",
			"expires_at":"2025-03-14T11:00:00.000000","usage_limits":{"rpm_limit":null}}`, nil,
			leaseAnswer{keyID: 9, expiresAt: exp}},
		{"offset time",
			`{"key_id":9,"api_key":"` + k + `","expires_at":"2025-03-14T14:30:00+03:30"}`,
			nil, leaseAnswer{keyID: 9, expiresAt: exp}},
		{"success false", `{"success":false,"message":"none"}`, ErrPlatformRefused, leaseAnswer{}},
		{"no key", `{"key_id":1,"expires_at":"2025-03-14T11:00:00Z"}`, ErrBadLease, leaseAnswer{}},
		{"zero id", `{"key_id":0,"api_key":"x","expires_at":"2025-03-14T11:00:00Z"}`,
			ErrBadLease, leaseAnswer{}},
		{"float id", `{"key_id":1.5,"api_key":"x","expires_at":"2025-03-14T11:00:00Z"}`,
			ErrBadLease, leaseAnswer{}},
		{"no expiry", `{"key_id":1,"api_key":"x"}`, ErrBadLease, leaseAnswer{}},
		{"expired", `{"key_id":1,"api_key":"x","expires_at":"2025-03-14T10:00:00Z"}`,
			ErrBadLease, leaseAnswer{}},
		{"negative limit", `{"key_id":1,"api_key":"x","expires_at":"2025-03-14T11:00:00Z",
			"usage_limits":{"rpm_limit":-1}}`, ErrBadLease, leaseAnswer{}},
		{"array", `[]`, ErrBadLease, leaseAnswer{}},
		{"not json", `<html>`, ErrBadLease, leaseAnswer{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeLease([]byte(tt.body), now)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error: got %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if got.keyID != tt.want.keyID || got.model != tt.want.model ||
				!got.expiresAt.Equal(tt.want.expiresAt) || got.limits != tt.want.limits ||
				got.secret.Reveal() != k {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func FuzzDecodeLease(f *testing.F) {
	f.Add(`{"success":true,"key_id":123,"api_key":"sk-x","model":"gpt-4",` +
		`"expires_at":"2099-01-11T00:00:00Z","usage_limits":{"rpm_limit":60,` +
		`"daily_token_limit":100000}}`)
	f.Add(`{"key_id":"7","api_key":"k","expires_at":"2099-01-01T00:00:00.5"}`)
	f.Add(`{"key_id":1e3,"api_key":"k","expires_at":"2099-01-01 00:00:00+00:00"}`)
	f.Add(`{"success":false}`)
	now := time.Date(2025, 3, 14, 10, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, body string) {
		a, err := decodeLease([]byte(body), now)
		if err != nil {
			if !errors.Is(err, ErrBadLease) && !errors.Is(err, ErrPlatformRefused) {
				t.Fatalf("error %v matches no sentinel", err)
			}
			// The body is never quoted in an error.
			if len(body) > 8 && strings.Contains(err.Error(), body) {
				t.Fatalf("error %q quotes the body", err)
			}
			return
		}
		if a.keyID <= 0 || a.secret.IsZero() || !a.expiresAt.After(now) ||
			a.limits.RPM < 0 || a.limits.DailyTokens < 0 {
			t.Fatalf("accepted a bad lease: %+v", a)
		}
	})
}
