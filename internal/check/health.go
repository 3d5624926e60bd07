package check

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/health"
)

// healthAttempts is how often the platform tries /health when a try
// raised an exception (no answer, a timeout, a body that is not JSON); a
// non-200 answer is final at once.
const healthAttempts = 3

// explainHealth says why the platform's classifier (health.Classify)
// gives its verdict on a /health answer. Its class always equals
// health.Classify's; FuzzExplainHealth holds it to that.
func explainHealth(code int, body []byte) (class, reason string) {
	if code != http.StatusOK {
		return health.ClassUnhealthy,
			fmt.Sprintf("status %d: the platform wants exactly 200", code)
	}
	if !utf8.Valid(body) {
		return health.ClassUnhealthy, "body is not valid UTF-8"
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil || obj == nil {
		return health.ClassUnhealthy, "body is not a JSON object: " + snippet(body)
	}
	var missing []string
	for _, k := range [...]string{"status", "version", "uptime"} {
		if _, ok := obj[k]; !ok {
			missing = append(missing, fmt.Sprintf("%q", k))
		}
	}
	if len(missing) > 0 {
		return health.ClassUnhealthy, "answer lacks " + strings.Join(missing, ", ") +
			": the platform requires status, version and uptime"
	}
	var status string
	if err := json.Unmarshal(obj["status"], &status); err != nil {
		return health.ClassDegraded,
			fmt.Sprintf("\"status\" is %s, not a string", jsonType(obj["status"]))
	}
	switch status {
	case "ok", "healthy", "up":
		return health.ClassHealthy, fmt.Sprintf("status %q", status)
	default:
		return health.ClassDegraded,
			fmt.Sprintf("status %q is none of \"ok\", \"healthy\", \"up\"", clip(status))
	}
}

// checkHealth gets /health as the platform does: no token, the health
// budget per try, up to three tries while a try raises an exception. Only
// "healthy" is listed.
func (r *runner) checkHealth(ctx context.Context) {
	c := call{endpoint: Health, check: "platform classifier",
		method: http.MethodGet, url: r.urls[Health]}

	// 1. Try until an answer the platform does not retry on.
	var a answer
	tries := 0
	for tries < healthAttempts && ctx.Err() == nil {
		tries++
		a = r.do(ctx, c)
		if a.err == nil && (a.status != http.StatusOK || json.Valid(a.body)) {
			break
		}
	}

	// 2. Judge the last try like any call, plus the classifier.
	var v verdict
	budget := r.budgets.of(Health)
	switch {
	case a.err != nil:
		v.fail("no answer in %d tries: %v", tries, a.err)
		r.report.Health = health.ClassUnhealthy
	case a.status >= 300 && a.status < 400:
		v.fail("redirects (%d to %q): the platform never follows redirects",
			a.status, a.header.Get("Location"))
		r.report.Health = health.ClassUnhealthy
	default:
		class, why := explainHealth(a.status, a.body)
		if c := health.Classify(a.status, a.body); c != class {
			class, why = c, "classified "+c // explainHealth is kept equal; belt and braces
		}
		r.report.Health = class
		if class == health.ClassHealthy {
			v.note("healthy: %s", why)
		} else {
			v.fail("%s: %s; only healthy automations are listed", class, why)
		}
	}
	if a.err == nil && a.elapsed > budget {
		v.fail("took %s, over the %s budget", a.elapsed.Round(time.Millisecond), budget)
	}
	if tries > 1 {
		v.note("%d tries", tries)
	}
	r.record(c, a, &v)
}

// checkHealthSlash gets /health with its trailing slash toggled: it must
// not redirect, and should answer the same.
func (r *runner) checkHealthSlash(ctx context.Context) {
	c := call{endpoint: Health, check: "trailing slash toggled",
		method: http.MethodGet, url: toggleSlash(r.urls[Health])}
	r.exchange(ctx, c, func(a answer, v *verdict) {
		class, why := explainHealth(a.status, a.body)
		if class != health.ClassHealthy {
			v.warn("classified %s (%s): the platform must be given the URL "+
				"exactly as checked", class, why)
			return
		}
		v.note("healthy, no redirect")
	})
}
