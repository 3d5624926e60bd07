package keys

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Outcome is what became of one upstream call made with a Lease.
type Outcome struct {
	// Status is the upstream's HTTP status; 0 when no answer came (a
	// network error, a timeout, a cancelled call).
	Status int
	// RetryAfter is the upstream's Retry-After (or retry-after-ms) delay.
	RetryAfter time.Duration
	// ResetAt is when the upstream's rate-limit window resets
	// (x-ratelimit-reset-requests / -tokens added to the answer's time).
	ResetAt time.Time
	// InsufficientQuota is set when the upstream refused with the error
	// code or type insufficient_quota: the key's account is out of credit.
	InsufficientQuota bool
	// Tokens is the number of tokens the call used, as metered (prompt
	// plus completion); 0 when unknown.
	Tokens int64
}

// Upstream headers the outcome is read from.
const (
	headerRetryAfter      = "Retry-After"
	headerRetryAfterMs    = "Retry-After-Ms"
	headerResetRequests   = "X-Ratelimit-Reset-Requests"
	headerResetTokens     = "X-Ratelimit-Reset-Tokens"
	headerRemainRequests  = "X-Ratelimit-Remaining-Requests"
	headerRemainTokens    = "X-Ratelimit-Remaining-Tokens"
	insufficientQuotaCode = "insufficient_quota"
)

// OutcomeFromResponse reads an upstream answer into an Outcome: the status,
// the Retry-After delay (retry-after-ms first, then Retry-After in seconds
// or as an HTTP date), the rate-limit reset time and, for an error status,
// whether body (the start of the answer's body; it may be cut short) names
// insufficient_quota. Tokens is left for the caller, who meters the call.
// Headers that do not parse are ignored.
func OutcomeFromResponse(status int, h http.Header, body []byte, now time.Time) Outcome {
	o := Outcome{Status: status}
	o.RetryAfter = retryAfter(h, now)
	if d, ok := resetDelay(h); ok {
		o.ResetAt = now.Add(d)
	}
	if status >= 400 {
		o.InsufficientQuota = namesInsufficientQuota(body)
	}
	return o
}

// retryAfter returns the delay the upstream asked for, or 0.
func retryAfter(h http.Header, now time.Time) time.Duration {
	if v := strings.TrimSpace(h.Get(headerRetryAfterMs)); v != "" {
		ms, err := strconv.ParseFloat(v, 64)
		if err == nil && ms > 0 && ms <= float64(MaxResetDuration/time.Millisecond) {
			return time.Duration(ms * float64(time.Millisecond))
		}
	}
	v := strings.TrimSpace(h.Get(headerRetryAfter))
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 || secs > int64(MaxResetDuration/time.Second) {
			return 0
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), MaxResetDuration)
	}
	return 0
}

// resetDelay picks the delay until the rate limit resets. When a remaining
// header says a budget is spent, the longest reset among spent budgets is
// the one to wait for; otherwise the shortest reset given (the 429 came
// from a burst, and the first window to reset may let the next call pass).
func resetDelay(h http.Header) (time.Duration, bool) {
	type budget struct{ reset, remaining string }
	budgets := []budget{
		{headerResetRequests, headerRemainRequests},
		{headerResetTokens, headerRemainTokens},
	}
	var spent, any time.Duration
	var haveSpent, haveAny bool
	for _, b := range budgets {
		d, err := ParseResetDuration(h.Get(b.reset))
		if err != nil {
			continue
		}
		if !haveAny || d < any {
			any, haveAny = d, true
		}
		if strings.TrimSpace(h.Get(b.remaining)) == "0" && (!haveSpent || d > spent) {
			spent, haveSpent = d, true
		}
	}
	if haveSpent {
		return spent, true
	}
	return any, haveAny
}

// namesInsufficientQuota reports whether an OpenAI error body says the
// account is out of credit. A body that is not whole JSON (cut short) is
// searched for the quoted code instead.
func namesInsufficientQuota(body []byte) bool {
	var e struct {
		Error struct {
			Code any    `json:"code"`
			Type string `json:"type"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		return bytes.Contains(body, []byte(`"`+insufficientQuotaCode+`"`))
	}
	code, _ := e.Error.Code.(string)
	return code == insufficientQuotaCode || e.Error.Type == insufficientQuotaCode
}

// MaxResetDuration bounds every delay read from an upstream header.
const MaxResetDuration = 7 * 24 * time.Hour

// Errors of ParseResetDuration.
var (
	errResetEmpty  = errors.New("empty reset duration")
	errResetSyntax = errors.New("malformed reset duration")
	errResetRange  = errors.New("reset duration out of range")
)

// resetUnits are the units a reset duration may use, longest name first
// where one is a prefix of another ("ms" before "m").
var resetUnits = []struct {
	name string
	d    time.Duration
}{
	{"ms", time.Millisecond},
	{"us", time.Microsecond},
	{"µs", time.Microsecond},
	{"ns", time.Nanosecond},
	{"d", 24 * time.Hour},
	{"h", time.Hour},
	{"m", time.Minute},
	{"s", time.Second},
}

// ParseResetDuration parses an x-ratelimit-reset-* value: a sequence of
// non-negative decimal numbers, each with a unit (d, h, m, s, ms, us, µs,
// ns), as OpenAI sends them ("1s", "6m0s", "20ms", "1h2m3.5s"), or one bare
// number of seconds ("1.5"). Surrounding spaces are ignored. Signs,
// exponents and values above MaxResetDuration are errors. Fractions are
// exact to the nanosecond (truncated beyond).
func ParseResetDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errResetEmpty
	}
	var total time.Duration
	for first := true; s != ""; first = false {
		whole, frac, fracDigits, rest, err := scanDecimal(s)
		if err != nil {
			return 0, err
		}
		unit, rest, ok := scanUnit(rest)
		if !ok {
			if !first || rest != "" {
				return 0, errResetSyntax
			}
			unit = time.Second
		}
		d, err := scaleDecimal(whole, frac, fracDigits, unit)
		if err != nil {
			return 0, err
		}
		total += d
		if total > MaxResetDuration {
			return 0, errResetRange
		}
		s = rest
	}
	return total, nil
}

// maxWholeDigits bounds the integer part so it cannot overflow.
const maxWholeDigits = 12

// scanDecimal reads digits with an optional fraction from the front of s.
// Fraction digits past nanosecond precision are dropped.
func scanDecimal(s string) (whole, frac int64, fracDigits int, rest string, err error) {
	i := 0
	for i < len(s) && isDigit(s[i]) {
		if i >= maxWholeDigits {
			return 0, 0, 0, "", errResetRange
		}
		whole = whole*10 + int64(s[i]-'0')
		i++
	}
	n := i
	if i < len(s) && s[i] == '.' {
		i++
		for i < len(s) && isDigit(s[i]) {
			if fracDigits < 9 {
				frac = frac*10 + int64(s[i]-'0')
				fracDigits++
			}
			i++
		}
		if i == n+1 && n == 0 {
			return 0, 0, 0, "", errResetSyntax
		}
	}
	if i == 0 {
		return 0, 0, 0, "", errResetSyntax
	}
	return whole, frac, fracDigits, s[i:], nil
}

// scanUnit reads a unit name from the front of s.
func scanUnit(s string) (time.Duration, string, bool) {
	for _, u := range resetUnits {
		if strings.HasPrefix(s, u.name) {
			return u.d, s[len(u.name):], true
		}
	}
	return 0, s, false
}

// scaleDecimal returns (whole + frac/10^fracDigits) units, or an error when
// that exceeds MaxResetDuration.
func scaleDecimal(whole, frac int64, fracDigits int, unit time.Duration) (time.Duration, error) {
	if whole > int64(MaxResetDuration/unit) {
		return 0, errResetRange
	}
	d := time.Duration(whole) * unit
	if fracDigits > 0 {
		pow := int64(1)
		for range fracDigits {
			pow *= 10
		}
		// frac < pow <= 1e9 and unit <= 24h: split to stay in int64.
		d += time.Duration(frac) * (unit / time.Duration(pow))
		d += time.Duration(frac) * (unit % time.Duration(pow)) / time.Duration(pow)
	}
	if d > MaxResetDuration {
		return 0, errResetRange
	}
	return d, nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
