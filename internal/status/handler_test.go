package status

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/net/html"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/health"
)

// get serves one request to h and returns the recorder.
func get(t *testing.T, h http.Handler, method, target string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
	return rec
}

func TestHandlerMethods(t *testing.T) {
	t.Parallel()
	h := Handler(fakeSource(t, &clock{t: t0}))
	for _, m := range []string{"POST", "PUT", "PATCH", "DELETE", "OPTIONS"} {
		rec := get(t, h, m, "/status")
		if rec.Code != http.StatusMethodNotAllowed {
			t.Errorf("%s: got %d, want 405", m, rec.Code)
		}
		if got := rec.Header().Get("Allow"); got != "GET, HEAD" {
			t.Errorf("%s: got Allow %q, want %q", m, got, "GET, HEAD")
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s: got Content-Type %q, want application/json", m, ct)
		}
	}
}

func TestHandlerHeaders(t *testing.T) {
	t.Parallel()
	h := Handler(fakeSource(t, &clock{t: t0}))
	tests := []struct {
		method, target, wantType string
		wantBody                 bool
	}{
		{"GET", "/status", "text/html; charset=utf-8", true},
		{"GET", "/status?format=html", "text/html; charset=utf-8", true},
		{"GET", "/status?format=json", "application/json", true},
		{"HEAD", "/status", "text/html; charset=utf-8", false},
	}
	for _, tt := range tests {
		rec := get(t, h, tt.method, tt.target)
		name := tt.method + " " + tt.target
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: got %d, want 200", name, rec.Code)
		}
		want := map[string]string{
			"Content-Type":            tt.wantType,
			"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
			"X-Content-Type-Options":  "nosniff",
			"X-Frame-Options":         "DENY",
			"Cache-Control":           "no-store",
		}
		for k, v := range want {
			if got := rec.Header().Get(k); got != v {
				t.Errorf("%s: got %s %q, want %q", name, k, got, v)
			}
		}
		if got := rec.Body.Len() > 0; got != tt.wantBody {
			t.Errorf("%s: got body %v, want %v", name, got, tt.wantBody)
		}
		if rec.Header().Get("Content-Length") == "" {
			t.Errorf("%s: no Content-Length", name)
		}
	}
}

func TestHandlerBadFormat(t *testing.T) {
	t.Parallel()
	rec := get(t, Handler(Source{}), "GET", "/status?format=xml")
	if rec.Code != http.StatusBadRequest {
		t.Fatalf("got %d, want 400", rec.Code)
	}
	var body struct{ Detail string }
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Detail == "" {
		t.Errorf("got body %q, want a JSON detail", rec.Body)
	}
}

func TestHandlerHTML(t *testing.T) {
	t.Parallel()
	rec := get(t, Handler(fakeSource(t, &clock{t: t0})), "GET", "/status")
	page := rec.Body.String()

	// Fixed parts: refresh, no favicon fetch, no external anything.
	for _, want := range []string{
		`<meta http-equiv="refresh" content="10">`,
		`<link rel="icon" href="data:,">`,
		"UNHEALTHY", "/health answers HTTP 503",
		`required probe &#34;app&#34; is down, which makes the verdict down ` +
			`(connection refused)`,
		"1.2.3", "up 26h0m0s", "17 waiting", "key-7f3a", "next probe in 20s",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	doc, err := html.Parse(strings.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	for _, tag := range []string{"script", "img", "iframe", "object", "form"} {
		if n := count(doc, tag); n != 0 {
			t.Errorf("got %d <%s> elements, want 0", n, tag)
		}
	}
	if refs := externalRefs(doc); len(refs) != 0 {
		t.Errorf("page references %q, want nothing outside the page", refs)
	}

	// The "app" probe row: 20 cells, 16 passing then 4 failing.
	var cells []string
	for _, row := range rows(byID(doc, "probes"), "probe") {
		if strings.HasPrefix(firstCell(row), probeApp+" ") {
			cells = cellClasses(row)
		}
	}
	want := strings.Repeat("cell r-pass,", 16) + strings.Repeat("cell r-fail,", 4)
	if got := strings.Join(cells, ","); got+"," != want {
		t.Errorf("got app cells %q, want %q", got, want)
	}
}

// externalRefs returns every src, href or action value that is not the
// empty data URL.
func externalRefs(n *html.Node) []string {
	var out []string
	if n.Type == html.ElementNode {
		for _, a := range n.Attr {
			switch a.Key {
			case "src", "href", "action", "srcset", "poster", "data":
				if a.Val != "data:," {
					out = append(out, a.Val)
				}
			}
		}
	}
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		out = append(out, externalRefs(c)...)
	}
	return out
}

// cellClasses returns the classes of a row's result cells.
func cellClasses(n *html.Node) []string {
	var out []string
	if n.Type == html.ElementNode && n.Data == "span" &&
		strings.HasPrefix(attr(n, "class"), "cell ") {
		out = append(out, attr(n, "class"))
	}
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		out = append(out, cellClasses(c)...)
	}
	return out
}

func TestHandlerEscapes(t *testing.T) {
	t.Parallel()
	rec := get(t, Handler(fakeSource(t, &clock{t: t0})), "GET", "/status")
	page := rec.Body.String()
	for _, raw := range []string{probeHostile, `<img src=x`, `<b>bold</b>`, `b=<i>`} {
		if strings.Contains(page, raw) {
			t.Errorf("page holds %q unescaped", raw)
		}
	}
	for _, want := range []string{
		`&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;`,
		`&#34;&gt;&lt;img src=x onerror=alert(1)&gt;`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks the escaped %q", want)
		}
	}
}

func TestHandlerJSON(t *testing.T) {
	t.Parallel()
	c := &clock{t: t0.Add(30 * time.Minute)}
	rec := get(t, Handler(fakeSource(t, c)), "GET", "/status?format=json")
	var rep Report
	if err := json.Unmarshal(rec.Body.Bytes(), &rep); err != nil {
		t.Fatalf("decode: %v\n%s", err, rec.Body)
	}

	if rep.Platform == nil || rep.Platform.Class != health.ClassUnhealthy ||
		rep.Platform.Listed || rep.Platform.HTTPStatus != 503 {
		t.Errorf("got platform %+v, want unhealthy, unlisted, 503", rep.Platform)
	}
	if rep.Verdict == nil || rep.Verdict.Status != health.StatusDown ||
		len(rep.Verdict.Checks) != 4 {
		t.Fatalf("got verdict %+v, want down with 4 checks", rep.Verdict)
	}
	if r := rep.Verdict.Reasons; len(r) != 3 || !strings.Contains(r[0], `"app" is down`) {
		t.Errorf("got reasons %q, want the app probe first of 3", r)
	}
	if rep.UptimeSeconds == nil || *rep.UptimeSeconds != 26*3600 {
		t.Errorf("got uptime %v, want %d", rep.UptimeSeconds, 26*3600)
	}
	if len(rep.Probes) != 3 || len(rep.Probes[0].Recent) != 20 ||
		rep.Probes[1].Recent[0].Class != resultSlow {
		t.Errorf("got probes %+v, want 3, app with 20 results, search slow", rep.Probes)
	}
	if len(rep.Endpoints) != len(fakeEndpoints) {
		t.Fatalf("got %d endpoints, want %d", len(rep.Endpoints), len(fakeEndpoints))
	}
	prov := rep.Endpoints[1]
	if prov.Endpoint != "provision" || prov.Requests != 2 || prov.SuccessRate != 0.5 ||
		prov.MaxMS != 2000 {
		t.Errorf("got provision %+v, want 2 requests, 50%%, max 2000 ms", prov)
	}
	if rep.Outbox == nil || !rep.Outbox.Known || rep.Outbox.Depth != 17 {
		t.Errorf("got outbox %+v, want 17", rep.Outbox)
	}
	if len(rep.Breakers) != 1 || rep.Breakers[0].State != BreakerOpen {
		t.Errorf("got breakers %+v, want one open", rep.Breakers)
	}
	if len(rep.Keys) != 1 || rep.Keys[0].ID != "key-7f3a" {
		t.Errorf("got keys %+v", rep.Keys)
	}
}

// A Source with nothing configured renders every section as such, and
// JSON has null for each.
func TestHandlerNotConfigured(t *testing.T) {
	t.Parallel()
	src := Source{Version: "0.0.1", Now: func() time.Time { return t0 }}
	page := get(t, Handler(src), "GET", "/status").Body.String()
	if n := strings.Count(page, "not configured"); n != 6 {
		t.Errorf("got %d \"not configured\", want 6 (platform, 5 sections)", n)
	}
	if !strings.Contains(page, `id="verdict-word">NOT CONFIGURED<`) {
		t.Errorf("banner does not say NOT CONFIGURED")
	}

	raw := get(t, Handler(src), "GET", "/status?format=json").Body.Bytes()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"platform", "verdict", "probes", "endpoints",
		"breakers", "keys", "outbox", "uptime_seconds"} {
		if string(m[k]) != "null" {
			t.Errorf("got %s %s, want null", k, m[k])
		}
	}
}

// Configured but empty sections are [] in JSON and say so on the page.
func TestHandlerEmptySections(t *testing.T) {
	t.Parallel()
	src := Source{
		Now:       func() time.Time { return t0 },
		Probes:    func() []health.ProbeStatus { return nil },
		Endpoints: func() []EndpointStats { return nil },
		Breakers:  func() []BreakerState { return nil },
		Keys:      func() []KeyState { return nil },
		Outbox:    func() (int, bool) { return 0, false },
	}
	page := get(t, Handler(src), "GET", "/status").Body.String()
	for _, want := range []string{"no probes", "no requests yet", "backlog unknown"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	raw := get(t, Handler(src), "GET", "/status?format=json").Body.Bytes()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"probes", "endpoints", "breakers", "keys"} {
		if string(m[k]) != "[]" {
			t.Errorf("got %s %s, want []", k, m[k])
		}
	}
}

func TestPlatformClassification(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		code       int
		body       string
		wantClass  string
		wantWhy    string
		wantTone   string
		wantListed bool
	}{
		{"healthy", 200, `{"status":"ok","version":"1","uptime":3}`,
			health.ClassHealthy, `status "ok"`, "ok", true},
		{"degraded", 200, `{"status":"degraded","version":"1","uptime":3}`,
			health.ClassDegraded, `status "degraded"; only ok`, "warn", false},
		{"no uptime", 200, `{"status":"ok","version":"1"}`,
			health.ClassUnhealthy, "not a JSON object holding", "bad", false},
		{"down", 503, `{"status":"down","version":"1","uptime":3}`,
			health.ClassUnhealthy, "HTTP 503", "bad", false},
		{"long status", 200, `{"status":"` + strings.Repeat("é", 40) +
			`","version":"1","uptime":3}`, health.ClassDegraded, `é...; only`, "warn", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The verdict says ok: a disagreeing answer still colours the
			// banner by the worse of the two.
			rep := Build(t.Context(), Source{
				Health:  healthAnswer(tt.code, tt.body),
				Verdict: func() health.Verdict { return health.Verdict{Status: "ok"} },
			})
			p := rep.Platform
			if p.Class != tt.wantClass || p.Listed != tt.wantListed ||
				!strings.Contains(p.Why, tt.wantWhy) {
				t.Errorf("got %+v, want class %s listed %v why ~%q",
					p, tt.wantClass, tt.wantListed, tt.wantWhy)
			}
			if !utf8.ValidString(p.Why) {
				t.Errorf("got why %q, not valid UTF-8", p.Why)
			}
			if rep.Tone != tt.wantTone {
				t.Errorf("got tone %q, want %q", rep.Tone, tt.wantTone)
			}
			if p.Body != tt.body {
				t.Errorf("got body %q, want %q", p.Body, tt.body)
			}
		})
	}
}

// The page works against a real health.Monitor: its /health answer is
// classified and its probe history shown.
func TestWithMonitor(t *testing.T) {
	t.Parallel()
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	}))
	t.Cleanup(app.Close)
	base, _ := http.NewRequest("GET", app.URL, nil)
	m, err := health.New(health.Options{
		BaseURL: base.URL, Version: "9.9.9",
		Probes: []health.ProbeOptions{{Name: "app", Path: "/healthz", Required: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	m.CheckNow(t.Context())

	rep := Build(t.Context(), Source{
		Health: m.Handler(), Verdict: m.Verdict, Probes: m.Probes,
	})
	if rep.Platform.Class != health.ClassUnhealthy || rep.Verdict.Status != health.StatusDown {
		t.Errorf("got class %s verdict %s, want unhealthy, down",
			rep.Platform.Class, rep.Verdict.Status)
	}
	if len(rep.Probes) != 1 || len(rep.Probes[0].Recent) != 1 ||
		rep.Probes[0].Recent[0].Error != "status 500" {
		t.Errorf("got probes %+v, want one failed result", rep.Probes)
	}
	if !strings.Contains(rep.Platform.Body, `"version":"9.9.9"`) {
		t.Errorf("got body %q, want the monitor's answer", rep.Platform.Body)
	}
}

// FuzzPageEscaping renders any probe name, error and endpoint label and
// checks that none of them adds an element or attribute to the page.
func FuzzPageEscaping(f *testing.F) {
	f.Add("app", "connection refused", "proxy")
	f.Add(probeHostile, `"><img src=x onerror=alert(1)>`, "route:/<b>")
	f.Add("</style><script>", "'\"`", "</td></tr></table><form>")
	f.Add("\xff\xfe", "{{.}}", "javascript:alert(1)")
	benign := shape(f, render(f, "a", "b", "c"))
	f.Fuzz(func(t *testing.T, name, errText, label string) {
		if got := shape(t, render(t, name, errText, label)); got != benign {
			t.Fatalf("input changed the page's structure:\ngot  %s\nwant %s", got, benign)
		}
	})
}

// render renders a page with one probe and one endpoint built from the
// inputs.
func render(t testing.TB, name, errText, label string) []byte {
	t.Helper()
	stats := NewStats(func() time.Time { return t0 })
	stats.Observe(label, 500, time.Millisecond)
	src := Source{
		Now: func() time.Time { return t0 },
		Probes: func() []health.ProbeStatus {
			return []health.ProbeStatus{{
				Options: health.ProbeOptions{Name: name, Method: "GET", Path: name},
				State:   health.State(errText), Error: errText,
				Recent: []health.Result{{At: t0, Error: errText}},
			}}
		},
		Verdict: func() health.Verdict {
			return health.Verdict{Status: errText, Checks: map[string]health.CheckStatus{
				name: {State: health.State(label), Error: errText},
			}}
		},
		Endpoints: stats.Endpoints,
		Keys: func() []KeyState {
			return []KeyState{{ID: name, State: label, Detail: errText}}
		},
	}
	var buf bytes.Buffer
	rep := Build(t.Context(), src)
	if err := renderHTML(&buf, &rep); err != nil {
		t.Fatalf("render: %v", err)
	}
	return buf.Bytes()
}

// shape lists the page's elements and attribute names in order: what
// input must never change.
func shape(t testing.TB, page []byte) string {
	t.Helper()
	var b strings.Builder
	z := html.NewTokenizer(bytes.NewReader(page))
	for {
		switch z.Next() {
		case html.ErrorToken:
			return b.String()
		case html.StartTagToken, html.SelfClosingTagToken, html.EndTagToken:
			tok := z.Token()
			b.WriteString(tok.Type.String()[:1] + tok.Data)
			for _, a := range tok.Attr {
				b.WriteString(" " + a.Key)
			}
			b.WriteString(";")
		}
	}
}
