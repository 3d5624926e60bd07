package zimmer

import (
	"encoding/json"
	"errors"
	"math"
	"math/big"
	"net/url"
	"strings"
	"testing"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

func TestParseJSONInt(t *testing.T) {
	t.Parallel()
	tests := []struct {
		lit     string
		want    int64
		wantErr error
	}{
		{"0", 0, nil},
		{"-0", 0, nil},
		{"42", 42, nil},
		{"-42", -42, nil},
		{"42.0", 42, nil},
		{"42.000", 42, nil},
		{"4.2e1", 42, nil},
		{"4200e-2", 42, nil},
		{"1E2", 100, nil},
		{"1e+2", 100, nil},
		{"0.0", 0, nil},
		{"0e999999999999", 0, nil},
		{"9223372036854775807", math.MaxInt64, nil},
		{"-9223372036854775808", math.MinInt64, nil},
		{"9223372036854775808", 0, errOverflow},
		{"1e19", 0, errOverflow},
		{"1e999999999999", 0, errOverflow},
		{"99999999999999999999", 0, errOverflow},
		{"42.5", 0, errFraction},
		{"0.1", 0, errFraction},
		{"1e-1", 0, errFraction},
		{"1e-999999999999", 0, errFraction},
		{"", 0, errSyntax},
		{"-", 0, errSyntax},
		{"01", 0, errSyntax},
		{"1.", 0, errSyntax},
		{".5", 0, errSyntax},
		{"1e", 0, errSyntax},
		{"1e+", 0, errSyntax},
		{"0x10", 0, errSyntax},
		{"1_000", 0, errSyntax},
	}
	for _, tt := range tests {
		got, err := parseJSONInt(tt.lit)
		if !errors.Is(err, tt.wantErr) || (err == nil && got != tt.want) {
			t.Errorf("parseJSONInt(%q): got %d, %v; want %d, %v",
				tt.lit, got, err, tt.want, tt.wantErr)
		}
	}
}

// wantRequestError fails unless err is a *RequestError with the detail.
func wantRequestError(t *testing.T, err error, detail string) {
	t.Helper()
	re, ok := errors.AsType[*RequestError](err)
	if !ok {
		t.Fatalf("error: got %v, want *RequestError %q", err, detail)
	}
	if re.Error() != detail {
		t.Fatalf("detail: got %q, want %q", re.Error(), detail)
	}
}

func TestDecodeProvision(t *testing.T) {
	t.Parallel()
	i64 := func(v int64) *int64 { return &v }
	str := func(s string) *string { return &s }
	tests := []struct {
		name    string
		body    string
		want    ProvisionCall
		wantErr string
	}{
		{
			name: "platform",
			body: `{"user_automation_id":123,"user_id":456,"bot_token":null,"demo_tokens":null}`,
			want: ProvisionCall{UserAutomationID: 123, UserID: 456},
		},
		{
			name: "guide",
			body: `{"user_automation_id":1,"user_id":2,"bot_token":"b","demo_tokens":5}`,
			want: ProvisionCall{UserAutomationID: 1, UserID: 2, BotToken: str("b"),
				DemoTokens: i64(5)},
		},
		{
			name: "numeric strings and extras",
			body: `{"user_automation_id":"42","user_id":" 7 ","demo_tokens":"0",` +
				`"service_url":"https://x","user_name":"n"}`,
			want: ProvisionCall{UserAutomationID: 42, UserID: 7, DemoTokens: i64(0)},
		},
		{
			name: "whole float",
			body: `{"user_automation_id":42.0,"user_id":4.2e1}`,
			want: ProvisionCall{UserAutomationID: 42, UserID: 42},
		},
		{
			name: "escaped digits",
			body: `{"user_automation_id":"\u0034\u0032","user_id":1}`,
			want: ProvisionCall{UserAutomationID: 42, UserID: 1},
		},
		{
			name: "empty bot token",
			body: `{"user_automation_id":1,"user_id":1,"bot_token":""}`,
			want: ProvisionCall{UserAutomationID: 1, UserID: 1, BotToken: str("")},
		},
		{name: "empty", body: ``, wantErr: "request body is required"},
		{name: "blank", body: " \n", wantErr: "request body is required"},
		{name: "array", body: `[1]`, wantErr: "request body must be a JSON object"},
		{name: "null", body: `null`, wantErr: "request body must be a JSON object"},
		{name: "invalid", body: `{"user_automation_id":1,`,
			wantErr: "request body is not valid JSON"},
		{name: "trailing", body: `{} {}`, wantErr: "request body is not valid JSON"},
		{name: "missing id", body: `{"user_id":1}`, wantErr: "user_automation_id is required"},
		{name: "null id", body: `{"user_automation_id":null,"user_id":1}`,
			wantErr: "user_automation_id is required"},
		{name: "missing user", body: `{"user_automation_id":1}`, wantErr: "user_id is required"},
		{name: "fraction", body: `{"user_automation_id":1.5,"user_id":1}`,
			wantErr: "user_automation_id must be a whole number"},
		{name: "negative", body: `{"user_automation_id":-1,"user_id":1}`,
			wantErr: "user_automation_id must be a positive integer"},
		{name: "zero", body: `{"user_automation_id":0,"user_id":1}`,
			wantErr: "user_automation_id must be a positive integer"},
		{name: "zero string", body: `{"user_automation_id":1,"user_id":"0"}`,
			wantErr: "user_id must be a positive integer"},
		{name: "overflow", body: `{"user_automation_id":9223372036854775808,"user_id":1}`,
			wantErr: "user_automation_id is too large"},
		{name: "overflow string",
			body:    `{"user_automation_id":"99999999999999999999","user_id":1}`,
			wantErr: "user_automation_id is too large"},
		{name: "word", body: `{"user_automation_id":"abc","user_id":1}`,
			wantErr: "user_automation_id must be an integer"},
		{name: "empty string", body: `{"user_automation_id":"","user_id":1}`,
			wantErr: "user_automation_id must be an integer"},
		{name: "float string", body: `{"user_automation_id":"1.0","user_id":1}`,
			wantErr: "user_automation_id must be an integer"},
		{name: "bool", body: `{"user_automation_id":true,"user_id":1}`,
			wantErr: "user_automation_id must be an integer"},
		{name: "object", body: `{"user_automation_id":{},"user_id":1}`,
			wantErr: "user_automation_id must be an integer"},
		{name: "bot token number", body: `{"user_automation_id":1,"user_id":1,"bot_token":5}`,
			wantErr: "bot_token must be a string or null"},
		{name: "negative demo", body: `{"user_automation_id":1,"user_id":1,"demo_tokens":-5}`,
			wantErr: "demo_tokens must not be negative"},
		{name: "fraction demo", body: `{"user_automation_id":1,"user_id":1,"demo_tokens":0.5}`,
			wantErr: "demo_tokens must be a whole number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := decodeProvision([]byte(tt.body))
			if tt.wantErr != "" {
				wantRequestError(t, err, tt.wantErr)
				return
			}
			if err != nil {
				t.Fatalf("decodeProvision: %v", err)
			}
			if !sameProvision(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// sameProvision compares two calls by value, pointers included.
func sameProvision(a, b ProvisionCall) bool {
	eqS := func(x, y *string) bool { return (x == nil) == (y == nil) && (x == nil || *x == *y) }
	eqI := func(x, y *int64) bool { return (x == nil) == (y == nil) && (x == nil || *x == *y) }
	return a.UserAutomationID == b.UserAutomationID && a.UserID == b.UserID &&
		eqS(a.BotToken, b.BotToken) && eqI(a.DemoTokens, b.DemoTokens)
}

func TestDecodeProvisionHidesBotToken(t *testing.T) {
	t.Parallel()
	const secret = "123456:AAE-secret-bot-token"
	for _, body := range []string{
		`{"user_automation_id":"` + secret + `","user_id":1}`,
		`{"user_automation_id":1,"user_id":"` + secret + `"}`,
		`{"user_automation_id":1,"user_id":1,"demo_tokens":"` + secret + `"}`,
	} {
		_, err := decodeProvision([]byte(body))
		if err == nil || strings.Contains(err.Error(), secret) {
			t.Fatalf("decodeProvision(%s): got %v, want an error without the value", body, err)
		}
	}
}

func TestDecodeConsume(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		body    string
		want    consumeCall
		wantErr string
	}{
		{
			name: "guide",
			body: `{"user_automation_id":123,"units":2,"usage_type":"chat_session",` +
				`"meta":{"session_id":"abc","message_count":5}}`,
			want: consumeCall{UserAutomationID: 123, Units: 2, UsageType: "chat_session"},
		},
		{
			name: "older dialect",
			body: `{"user_automation_id":"9","tokens_consumed":"3","action":"reply",` +
				`"session_id":"s","timestamp":"2025-01-01T00:00:00Z"}`,
			want: consumeCall{UserAutomationID: 9, Units: 3, UsageType: "reply"},
		},
		{
			name: "units win over tokens_consumed",
			body: `{"user_automation_id":1,"units":4,"tokens_consumed":9,"usage_type":"a"}`,
			want: consumeCall{UserAutomationID: 1, Units: 4, UsageType: "a"},
		},
		{
			name: "request id",
			body: `{"user_automation_id":1,"units":1,"usage_type":"a",` +
				`"meta":{"request_id":"r-1"}}`,
			want: consumeCall{UserAutomationID: 1, Units: 1, UsageType: "a", RequestID: "r-1"},
		},
		{
			name: "numeric request id",
			body: `{"user_automation_id":1,"units":1,"usage_type":"a","meta":{"request_id":77}}`,
			want: consumeCall{UserAutomationID: 1, Units: 1, UsageType: "a", RequestID: "77"},
		},
		{
			name: "null meta",
			body: `{"user_automation_id":1,"units":1,"usage_type":"a","meta":null}`,
			want: consumeCall{UserAutomationID: 1, Units: 1, UsageType: "a"},
		},
		{
			name: "units at max",
			body: `{"user_automation_id":1,"units":100,"usage_type":"a"}`,
			want: consumeCall{UserAutomationID: 1, Units: 100, UsageType: "a"},
		},
		{name: "empty", body: ``, wantErr: "request body is required"},
		{name: "missing units", body: `{"user_automation_id":1,"usage_type":"a"}`,
			wantErr: "units is required"},
		{name: "zero units", body: `{"user_automation_id":1,"units":0,"usage_type":"a"}`,
			wantErr: "units must be a positive integer"},
		{name: "negative units", body: `{"user_automation_id":1,"units":-3,"usage_type":"a"}`,
			wantErr: "units must be a positive integer"},
		{name: "negative old units",
			body:    `{"user_automation_id":1,"tokens_consumed":-3,"usage_type":"a"}`,
			wantErr: "tokens_consumed must be a positive integer"},
		{name: "units over max", body: `{"user_automation_id":1,"units":101,"usage_type":"a"}`,
			wantErr: "units must not exceed 100"},
		{name: "fraction units", body: `{"user_automation_id":1,"units":1.5,"usage_type":"a"}`,
			wantErr: "units must be a whole number"},
		{name: "huge units", body: `{"user_automation_id":1,"units":1e300,"usage_type":"a"}`,
			wantErr: "units is too large"},
		{name: "missing usage type", body: `{"user_automation_id":1,"units":1}`,
			wantErr: "usage_type is required"},
		{name: "empty usage type", body: `{"user_automation_id":1,"units":1,"usage_type":" "}`,
			wantErr: "usage_type must not be empty"},
		{name: "number usage type", body: `{"user_automation_id":1,"units":1,"usage_type":3}`,
			wantErr: "usage_type must be a string"},
		{name: "long action",
			body: `{"user_automation_id":1,"units":1,"action":"` +
				strings.Repeat("a", 129) + `"}`,
			wantErr: "action is too long"},
		{name: "missing id", body: `{"units":1,"usage_type":"a"}`,
			wantErr: "user_automation_id is required"},
		{name: "meta array", body: `{"user_automation_id":1,"units":1,"usage_type":"a","meta":[]}`,
			wantErr: "meta must be an object"},
		{name: "empty request id",
			body: `{"user_automation_id":1,"units":1,"usage_type":"a",` +
				`"meta":{"request_id":""}}`,
			wantErr: "meta.request_id must not be empty"},
		{name: "object request id",
			body: `{"user_automation_id":1,"units":1,"usage_type":"a",` +
				`"meta":{"request_id":{}}}`,
			wantErr: "meta.request_id must be a string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := decodeConsume([]byte(tt.body), 100)
			if tt.wantErr != "" {
				wantRequestError(t, err, tt.wantErr)
				return
			}
			if err != nil {
				t.Fatalf("decodeConsume: %v", err)
			}
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestDecodeKB(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		query   string
		body    string
		want    kbCall
		wantErr string
	}{
		{name: "guide query", query: "user_automation_id=12", want: kbCall{UserAutomationID: 12}},
		{name: "platform body", body: `{"user_id":3,"user_automation_id":12}`,
			want: kbCall{UserAutomationID: 12, UserID: 3}},
		{name: "string ids", body: `{"user_id":"3","user_automation_id":"12"}`,
			want: kbCall{UserAutomationID: 12, UserID: 3}},
		{name: "both agree", query: "user_automation_id=12", body: `{"user_automation_id":12}`,
			want: kbCall{UserAutomationID: 12}},
		{name: "split", query: "user_id=3", body: `{"user_automation_id":12}`,
			want: kbCall{UserAutomationID: 12, UserID: 3}},
		{name: "empty body with query", query: "user_automation_id=5", body: "  ",
			want: kbCall{UserAutomationID: 5}},
		{name: "nothing", wantErr: "user_automation_id is required"},
		{name: "empty object", body: `{}`, wantErr: "user_automation_id is required"},
		{name: "disagree", query: "user_automation_id=1", body: `{"user_automation_id":2}`,
			wantErr: "user_automation_id differs between query and body"},
		{name: "twice", query: "user_automation_id=1&user_automation_id=1",
			wantErr: "user_automation_id must be given once"},
		{name: "query word", query: "user_automation_id=abc",
			wantErr: "user_automation_id must be an integer"},
		{name: "query empty", query: "user_automation_id=",
			wantErr: "user_automation_id must be an integer"},
		{name: "query zero", query: "user_automation_id=0",
			wantErr: "user_automation_id must be a positive integer"},
		{name: "query overflow", query: "user_automation_id=99999999999999999999",
			wantErr: "user_automation_id is too large"},
		{name: "body negative", body: `{"user_automation_id":-4}`,
			wantErr: "user_automation_id must be a positive integer"},
		{name: "body user fraction", body: `{"user_automation_id":4,"user_id":0.5}`,
			wantErr: "user_id must be a whole number"},
		{name: "body array", body: `[]`, wantErr: "request body must be a JSON object"},
		{name: "body broken", body: `{`, wantErr: "request body is not valid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			q, err := url.ParseQuery(tt.query)
			if err != nil {
				t.Fatalf("query: %v", err)
			}
			got, err := decodeKB(q, []byte(tt.body))
			if tt.wantErr != "" {
				wantRequestError(t, err, tt.wantErr)
				return
			}
			if err != nil {
				t.Fatalf("decodeKB: %v", err)
			}
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestHeaderKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		values  []string
		want    string
		wantErr string
	}{
		{name: "absent"},
		{name: "set", values: []string{"k1"}, want: "k1"},
		{name: "empty", values: []string{""}, wantErr: "Idempotency-Key must not be empty"},
		{name: "blank", values: []string{"  "}, wantErr: "Idempotency-Key must not be empty"},
		{name: "twice", values: []string{"a", "b"}, wantErr: "Idempotency-Key must be sent once"},
		{name: "long", values: []string{strings.Repeat("k", 256)},
			wantErr: "Idempotency-Key must be at most 255 printable ASCII characters"},
		{name: "not ascii", values: []string{"clé"},
			wantErr: "Idempotency-Key must be at most 255 printable ASCII characters"},
		{name: "longest", values: []string{strings.Repeat("k", 255)},
			want: strings.Repeat("k", 255)},
	}
	for _, tt := range tests {
		h := make(map[string][]string)
		if tt.values != nil {
			h["Idempotency-Key"] = tt.values
		}
		got, err := headerKey(h)
		if tt.wantErr != "" {
			wantRequestError(t, err, tt.wantErr)
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%s: got %q, %v; want %q", tt.name, got, err, tt.want)
		}
	}
}

// checkDecodeError fails unless err is a clean *RequestError.
func checkDecodeError(t *testing.T, err error) {
	t.Helper()
	re, ok := errors.AsType[*RequestError](err)
	if !ok || re.Reason == "" {
		t.Fatalf("error %v (%T) is not a clean *RequestError", err, err)
	}
}

func FuzzDecodeProvision(f *testing.F) {
	for _, seed := range []string{
		`{"user_automation_id":123,"user_id":456,"bot_token":null,"demo_tokens":null}`,
		`{"user_automation_id":"42","user_id":"7","bot_token":"x","demo_tokens":"5"}`,
		`{"user_automation_id":4.2e1,"user_id":1e18,"demo_tokens":0}`,
		`{"user_automation_id":-1}`, `[]`, `null`, ``, `{"user_id":1e99999999999}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		call, err := decodeProvision(body)
		if err != nil {
			checkDecodeError(t, err)
			return
		}
		if call.UserAutomationID <= 0 || call.UserID <= 0 {
			t.Fatalf("accepted non-positive ids: %+v", call)
		}
		if call.DemoTokens != nil && *call.DemoTokens < 0 {
			t.Fatalf("accepted negative demo tokens: %d", *call.DemoTokens)
		}

		// What was accepted survives a round trip through plain JSON.
		again, err := json.Marshal(map[string]any{
			"user_automation_id": call.UserAutomationID, "user_id": call.UserID,
			"bot_token": call.BotToken, "demo_tokens": call.DemoTokens,
		})
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		back, err := decodeProvision(again)
		if err != nil || !sameProvision(back, call) {
			t.Fatalf("round trip: got %+v, %v; want %+v", back, err, call)
		}
	})
}

func FuzzDecodeConsume(f *testing.F) {
	for _, seed := range []string{
		`{"user_automation_id":1,"units":2,"usage_type":"chat","meta":{"request_id":"r"}}`,
		`{"user_automation_id":"1","tokens_consumed":"2","action":"a","session_id":1}`,
		`{"user_automation_id":1,"units":1e3,"usage_type":"a","meta":{"request_id":5}}`,
		`{"user_automation_id":1,"units":0.5}`, `{"meta":[]}`, `{`, ``,
	} {
		f.Add([]byte(seed))
	}
	const maxUnits = 1000
	f.Fuzz(func(t *testing.T, body []byte) {
		call, err := decodeConsume(body, maxUnits)
		if err != nil {
			checkDecodeError(t, err)
			return
		}
		switch {
		case call.UserAutomationID <= 0:
			t.Fatalf("accepted non-positive id: %+v", call)
		case call.Units <= 0 || call.Units > maxUnits:
			t.Fatalf("accepted units out of range: %+v", call)
		case strings.TrimSpace(call.UsageType) == "" || len(call.UsageType) > maxUsageTypeLen:
			t.Fatalf("accepted bad usage type: %+v", call)
		case call.RequestID != "" && metering.CheckIdempotencyKey(call.RequestID) != nil:
			t.Fatalf("accepted an invalid request id: %q", call.RequestID)
		}
	})
}

func FuzzDecodeKB(f *testing.F) {
	f.Add("user_automation_id=1", []byte(``))
	f.Add("", []byte(`{"user_id":2,"user_automation_id":"3"}`))
	f.Add("user_automation_id=3&user_id=x", []byte(`{"user_automation_id":3}`))
	f.Add("user_automation_id=1&user_automation_id=2", []byte(`null`))
	f.Fuzz(func(t *testing.T, rawQuery string, body []byte) {
		// Like r.URL.Query, keep what parses and drop the rest.
		q, _ := url.ParseQuery(rawQuery)
		call, err := decodeKB(q, body)
		if err != nil {
			checkDecodeError(t, err)
			return
		}
		if call.UserAutomationID <= 0 || call.UserID < 0 {
			t.Fatalf("accepted bad ids: %+v", call)
		}
	})
}

// FuzzParseJSONInt checks the decimal parser against math/big on
// literals small enough for big.Rat to expand cheaply.
func FuzzParseJSONInt(f *testing.F) {
	for _, seed := range []string{"42", "-0", "4.2e1", "1e-1", "9223372036854775808", "01"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, lit string) {
		got, err := parseJSONInt(lit)
		if err != nil && !errors.Is(err, errSyntax) && !errors.Is(err, errFraction) &&
			!errors.Is(err, errOverflow) {
			t.Fatalf("parseJSONInt(%q): unexpected error %v", lit, err)
		}
		if len(lit) > 64 || !json.Valid([]byte(lit)) ||
			strings.Trim(lit, "-.0123456789eE+") != "" {
			return
		}
		if _, exp, ok := strings.Cut(strings.ToLower(lit), "e"); ok && len(exp) > 4 {
			return
		}
		want, ok := new(big.Rat).SetString(lit)
		if !ok {
			t.Fatalf("big.Rat rejects valid JSON number %q", lit)
		}
		switch {
		case !want.IsInt():
			if !errors.Is(err, errFraction) {
				t.Fatalf("parseJSONInt(%q): got %d, %v; want a fraction error", lit, got, err)
			}
		case !want.Num().IsInt64():
			if !errors.Is(err, errOverflow) {
				t.Fatalf("parseJSONInt(%q): got %d, %v; want an overflow", lit, got, err)
			}
		case err != nil || got != want.Num().Int64():
			t.Fatalf("parseJSONInt(%q): got %d, %v; want %s", lit, got, err, want.Num())
		}
	})
}
