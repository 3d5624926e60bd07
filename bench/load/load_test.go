package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestTemplateRender(t *testing.T) {
	tests := []struct {
		name string
		in   string
		seq  int64
		want string
	}{
		{"empty", "", 7, ""},
		{"literal", `{"a":1}`, 7, `{"a":1}`},
		{"seq", `{"id":{seq}}`, 42, `{"id":42}`},
		{"mod", `{"u":{seq%4}}`, 6, `{"u":3}`},
		{"mod one", `{seq%1}`, 99, `1`},
		{"both", `{seq}-{seq%10}-{seq}`, 15, `15-6-15`},
		{"not a placeholder", `{seqx}{se}`, 1, `{seqx}{se}`},
		{"unicode around", `é{seq}ü`, 3, `é3ü`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tpl, err := parseTemplate(tt.in)
			if err != nil {
				t.Fatalf("parseTemplate(%q): %v", tt.in, err)
			}
			if got := string(tpl.render(tt.seq)); got != tt.want {
				t.Errorf("render(%d) = %q, want %q", tt.seq, got, tt.want)
			}
		})
	}
}

func TestTemplateErrors(t *testing.T) {
	for _, in := range []string{"{seq%}", "{seq%0}", "{seq%-3}", "{seq%x}", "{seq%4",
		"{seq%2000000000000}"} {
		if _, err := parseTemplate(in); err == nil {
			t.Errorf("parseTemplate(%q): got nil error, want one", in)
		}
	}
}

// FuzzTemplate checks that any body parses or fails cleanly, and that a
// body without "{seq" renders to itself.
func FuzzTemplate(f *testing.F) {
	for _, s := range []string{"", "{seq}", "{seq%3}", `{"a":{seq%2}}`, "{seq%", "{{seq}}",
		"{seq%9999999999999999999}"} {
		f.Add(s, int64(5))
	}
	f.Fuzz(func(t *testing.T, s string, seq int64) {
		if seq < 1 {
			seq = 1
		}
		tpl, err := parseTemplate(s)
		if err != nil {
			return
		}
		out := tpl.render(seq)
		if !strings.Contains(s, "{seq") && string(out) != s {
			t.Errorf("render of plain %q = %q", s, out)
		}
		if strings.Contains(string(out), "{seq}") && !strings.Contains(s, "{seq{seq}") {
			// {seq} itself is always replaced; it can only reappear when
			// the input built it from a literal "{seq" and a placeholder.
			t.Errorf("render of %q kept a {seq}: %q", s, out)
		}
	})
}

func TestPercentile(t *testing.T) {
	d := func(n int) []time.Duration {
		out := make([]time.Duration, n)
		for i := range out {
			out[i] = time.Duration(i+1) * time.Millisecond
		}
		return out
	}
	tests := []struct {
		name string
		in   []time.Duration
		p    int
		want time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one", d(1), 99, time.Millisecond},
		{"p50 of 100", d(100), 50, 50 * time.Millisecond},
		{"p99 of 100", d(100), 99, 99 * time.Millisecond},
		{"p90 of 10", d(10), 90, 9 * time.Millisecond},
		{"p99 of 10", d(10), 99, 10 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := percentile(tt.in, tt.p); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestCheckTarget(t *testing.T) {
	tests := []struct {
		url string
		ok  bool
	}{
		{"http://127.0.0.1:8080/x", true},
		{"http://127.0.0.2/x", true},
		{"http://[::1]:80/", true},
		{"http://localhost:9/", true},
		{"", false},
		{"ftp://127.0.0.1/", false},
		{"http://10.0.0.1/", false},
		{"http://192.168.1.1/", false},
		{"http://169.254.169.254/", false},
		{"http://example.com/", false},
		{"http://127.0.0.1.example.com/", false},
	}
	for _, tt := range tests {
		err := checkTarget(tt.url)
		if (err == nil) != tt.ok {
			t.Errorf("checkTarget(%q) = %v, want ok=%v", tt.url, err, tt.ok)
		}
	}
}

func TestParseFlagsRejects(t *testing.T) {
	base := []string{"-url", "http://127.0.0.1:1/"}
	tests := []struct {
		name string
		args []string
	}{
		{"no url", nil},
		{"zero conns", append(base, "-c", "0")},
		{"zero duration", append(base, "-d", "0s")},
		{"huge duration", append(base, "-d", "2h")},
		{"negative count", append(base, "-n", "-1")},
		{"bad header", append(base, "-header", "nocolon")},
		{"bad body", append(base, "-body", "{seq%0}")},
		{"extra args", append(base, "more")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := parseFlags(tt.args, io.Discard); err == nil {
				t.Errorf("parseFlags(%q): got nil error, want one", tt.args)
			}
		})
	}
}

// TestRunAgainstServer drives a real loopback server and checks what it
// received and what the report says.
func TestRunAgainstServer(t *testing.T) {
	var (
		mu     sync.Mutex
		keys   = map[string]bool{}
		bodies = map[string]bool{}
		hosts  = map[string]bool{}
		custom int
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		keys[r.Header.Get("Idempotency-Key")] = true
		bodies[string(b)] = true
		hosts[r.Host] = true
		if r.Header.Get("X-Bench") == "yes" && r.Header.Get("Content-Type") == "application/json" {
			custom++
		}
		n := len(keys)
		mu.Unlock()
		if n%10 == 0 {
			w.WriteHeader(http.StatusTeapot)
		}
	}))
	t.Cleanup(srv.Close)

	var out bytes.Buffer
	err := run([]string{"-url", srv.URL + "/p", "-method", "POST", "-c", "4",
		"-d", "30s", "-n", "100", "-idempotency", "-json",
		"-header", "X-Bench: yes", "-header", "Host: app.test",
		"-body", `{"n":{seq},"u":{seq%3}}`}, &out, io.Discard)
	if err != nil {
		t.Fatalf("run: %v", err)
	}

	var res result
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("decode report %q: %v", out.String(), err)
	}
	if res.Requests != 100 || res.Errors != 0 {
		t.Errorf("requests %d errors %d, want 100 and 0", res.Requests, res.Errors)
	}
	if res.Non2xx != 10 || res.Statuses["418"] != 10 || res.Statuses["200"] != 90 {
		t.Errorf("non2xx %d statuses %v, want 10 x 418 and 90 x 200", res.Non2xx, res.Statuses)
	}
	if res.P50ms <= 0 || res.P99ms < res.P50ms || res.MaxMs < res.P99ms {
		t.Errorf("latencies p50 %v p99 %v max %v are not ordered", res.P50ms, res.P99ms, res.MaxMs)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(keys) != 100 || len(bodies) != 100 || custom != 100 {
		t.Errorf("distinct keys %d, bodies %d, custom headers %d; want 100 each",
			len(keys), len(bodies), custom)
	}
	if !bodies[`{"n":7,"u":2}`] {
		t.Errorf("body for seq 7 missing")
	}
	if len(hosts) != 1 || !hosts["app.test"] {
		t.Errorf("hosts %v, want only app.test", hosts)
	}
}

// TestRunStopsAfterDuration checks that -d alone bounds a run against a
// server that answers slowly, and that the last request still counts.
func TestRunStopsAfterDuration(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond)
	}))
	t.Cleanup(srv.Close)

	o, err := parseFlags([]string{"-url", srv.URL, "-c", "2", "-d", "100ms"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	res, err := generate(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests == 0 || res.Errors != 0 {
		t.Errorf("requests %d errors %d, want some and none", res.Requests, res.Errors)
	}
	if res.elapsed > 5*time.Second {
		t.Errorf("run took %v, want it bounded by -d plus one request", res.elapsed)
	}
}

func TestRunFailsWithoutSuccess(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	}))
	t.Cleanup(srv.Close)
	var out bytes.Buffer
	err := run([]string{"-url", srv.URL, "-c", "1", "-n", "3"}, &out, io.Discard)
	if err == nil {
		t.Fatalf("run: got nil error, want one when every answer is 500")
	}
	if !strings.Contains(out.String(), "500: 3") {
		t.Errorf("report %q does not list three 500s", out.String())
	}
}
