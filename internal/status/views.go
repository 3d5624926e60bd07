package status

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/health"
)

// classify asks the /health handler and classifies its answer.
func classify(ctx context.Context, h http.Handler) *Platform {
	req := (&http.Request{
		Method:     http.MethodGet,
		URL:        &url.URL{Path: "/health"},
		RequestURI: "/health",
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     make(http.Header),
		Body:       http.NoBody,
		Host:       "localhost",
		RemoteAddr: "127.0.0.1:0",
	}).WithContext(ctx)
	rec := newRecorder(maxHealthBody)
	h.ServeHTTP(rec, req)
	code := rec.statusCode()

	p := &Platform{
		Class:      health.Classify(code, rec.body),
		HTTPStatus: code,
		Body:       string(rec.body),
	}
	p.Listed = p.Class == health.ClassHealthy
	p.Why = explain(p.Class, code, rec.body)
	return p
}

// explain says in one sentence why the classifier gave class.
func explain(class string, code int, body []byte) string {
	switch {
	case code != http.StatusOK:
		return "/health answers HTTP " + strconv.Itoa(code) +
			"; the platform accepts only exactly 200"
	case class == health.ClassUnhealthy:
		return "the /health body is not a JSON object holding " +
			"status, version and uptime"
	case class == health.ClassDegraded:
		return "/health reports status " + statusField(body) +
			"; only ok, healthy or up count as healthy"
	default:
		return "/health answers 200 with status " + statusField(body)
	}
}

// verdictView lists the checks by name and says why the verdict is what
// it is: the checks that make it down first, then those that degrade it.
func verdictView(v health.Verdict, now time.Time) *VerdictView {
	vv := &VerdictView{Status: v.Status, Reasons: []string{}, Checks: []CheckView{}}
	names := make([]string, 0, len(v.Checks))
	for name := range v.Checks {
		names = append(names, name)
	}
	slices.Sort(names)

	var downs, degrades []string
	for _, name := range names {
		c := v.Checks[name]
		vv.Checks = append(vv.Checks, CheckView{
			Name:      name,
			State:     string(c.State),
			Required:  c.Required,
			Probe:     c.Probe,
			Error:     c.Error,
			Since:     c.Since.UTC(),
			SinceText: ago(now, c.Since),
		})
		switch {
		case c.State == health.StateUp:
		case c.Required && c.State == health.StateDown:
			downs = append(downs, reason(name, c, "makes the verdict down"))
		default:
			degrades = append(degrades, reason(name, c, "degrades the verdict"))
		}
	}
	vv.Reasons = append(append(vv.Reasons, downs...), degrades...)

	switch {
	case len(names) == 0:
		vv.Reasons = append(vv.Reasons,
			"no checks configured: the sidecar reports only itself")
	case len(vv.Reasons) == 0:
		vv.Reasons = append(vv.Reasons, "every check is up")
	}
	return vv
}

// reason says that the check name in state c has effect on the verdict.
func reason(name string, c health.CheckStatus, effect string) string {
	kind := "check"
	if c.Probe {
		kind = "probe"
	}
	if c.Required {
		kind = "required " + kind
	}
	s := kind + ` "` + name + `" is ` + string(c.State) + ", which " + effect
	if c.Error != "" {
		s += " (" + c.Error + ")"
	}
	return s
}

// probeViews converts the probes, keeping their order.
func probeViews(ps []health.ProbeStatus, now time.Time) []ProbeView {
	out := make([]ProbeView, 0, len(ps))
	for _, p := range ps {
		pv := ProbeView{
			Name:      p.Options.Name,
			Method:    p.Options.Method,
			Path:      p.Options.Path,
			Required:  p.Options.Required,
			State:     string(p.State),
			LatencyMS: ms(p.Latency),
			Error:     p.Error,
			Since:     p.Since.UTC(),
			SinceText: ago(now, p.Since),
			Recent:    make([]ResultView, 0, len(p.Recent)),
		}
		for _, r := range p.Recent {
			pv.Recent = append(pv.Recent, resultView(r, p.Options.SlowAfter))
		}
		out = append(out, pv)
	}
	return out
}

// resultView classifies one result; a pass slower than slowAfter (when
// set) is slow.
func resultView(r health.Result, slowAfter time.Duration) ResultView {
	rv := ResultView{
		At:        r.At.UTC(),
		OK:        r.OK,
		Class:     resultPass,
		LatencyMS: ms(r.Latency),
		Error:     r.Error,
	}
	switch {
	case !r.OK:
		rv.Class = resultFail
	case slowAfter > 0 && r.Latency > slowAfter:
		rv.Class = resultSlow
	}
	rv.Title = fmt.Sprintf("%s %s %s", r.At.UTC().Format(time.TimeOnly),
		rv.Class, fmtMS(rv.LatencyMS))
	if r.Error != "" {
		rv.Title += ": " + r.Error
	}
	return rv
}

// endpointViews converts the endpoint numbers.
func endpointViews(es []EndpointStats) []EndpointView {
	out := make([]EndpointView, 0, len(es))
	for _, e := range es {
		out = append(out, EndpointView{
			Endpoint:     e.Endpoint,
			Requests:     e.Requests,
			Successes:    e.Successes,
			ClientErrors: e.ClientErrors,
			ServerErrors: e.ServerErrors,
			SuccessRate:  e.SuccessRate(),
			P50MS:        ms(e.P50),
			P99MS:        ms(e.P99),
			MinMS:        ms(e.Min),
			MeanMS:       ms(e.Mean),
			MaxMS:        ms(e.Max),
		})
	}
	return out
}

// ms converts d to milliseconds with microsecond precision.
func ms(d time.Duration) float64 {
	return float64(d.Microseconds()) / 1000
}

// ago says how long before now t was, in whole seconds ("3m20s ago").
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := max(now.Sub(t).Truncate(time.Second), 0)
	return d.String() + " ago"
}

// maxStatusText bounds the "status" value quoted in an explanation.
const maxStatusText = 40

// statusField returns the JSON text of the "status" key of a /health
// body, shortened, or "(missing)".
func statusField(body []byte) string {
	var obj map[string]json.RawMessage
	if json.Unmarshal(body, &obj) != nil {
		return "(unreadable)"
	}
	v, ok := obj["status"]
	if !ok {
		return "(missing)"
	}
	if len(v) <= maxStatusText {
		return string(v)
	}
	n := maxStatusText
	for n > 0 && !utf8.RuneStart(v[n]) {
		n--
	}
	return string(v[:n]) + "..."
}

// fmtMS formats milliseconds for people: "0.42 ms", "12.3 ms", "1520 ms".
func fmtMS(v float64) string {
	switch {
	case v < 1:
		return strconv.FormatFloat(v, 'f', 2, 64) + " ms"
	case v < 100:
		return strconv.FormatFloat(v, 'f', 1, 64) + " ms"
	default:
		return strconv.FormatFloat(v, 'f', 0, 64) + " ms"
	}
}

// fmtPct formats a rate in [0, 1] as a percentage with one decimal,
// never rounding a rate below 1 up to "100.0 %".
func fmtPct(rate float64) string {
	p := rate * 100
	s := strconv.FormatFloat(p, 'f', 1, 64)
	if rate < 1 && s == "100.0" {
		s = "99.9"
	}
	return s + " %"
}
