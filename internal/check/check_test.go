package check

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestCompliantAutomationIsListed(t *testing.T) {
	t.Parallel()
	f := newFake(t, nil)
	rep := runCheck(t, f.options())

	if !rep.Listed || rep.Health != "healthy" || rep.Summary.Fail != 0 ||
		rep.Summary.Warn != 0 {
		t.Fatalf("got listed %v, health %q, summary %+v; want listed, healthy, "+
			"no fail or warn\n%s", rep.Listed, rep.Health, rep.Summary, table(rep))
	}

	// Every kind of check ran.
	rows := []struct {
		ep    Endpoint
		check string
	}{
		{Health, "platform classifier"},
		{Health, "trailing slash toggled"},
		{Provision, "GET without token (URL checker)"},
		{Provision, "no token"},
		{Provision, "wrong token"},
		{Provision, "platform dialect"},
		{Provision, "repeated, guide dialect"},
		{Provision, "repeated, numeric-string ids"},
		{Consume, "GET without token (URL checker)"},
		{Consume, "no token"},
		{Consume, "wrong token"},
		{Consume, "guide dialect"},
		{Consume, "older dialect (tokens_consumed)"},
		{KBStatus, "POST, platform dialect"},
		{KBStatus, "GET, guide dialect"},
		{KBStatus, "no token"},
		{KBStatus, "wrong token"},
		{Provision, "trailing slash toggled"},
		{Consume, "trailing slash toggled"},
		{KBStatus, "trailing slash toggled"},
		{KBReset, "GET without token (URL checker)"},
		{KBReset, "no token"},
		{KBReset, "wrong token"},
		{KBReset, "POST, id in query (guide)"},
		{KBReset, "POST, id in body (platform)"},
		{KBReset, "trailing slash toggled"},
	}
	for _, row := range rows {
		r := find(t, rep, row.ep, row.check)
		if r.Budget != DefaultBudgets.of(row.ep) {
			t.Errorf("%s / %q: budget %s, want %s", row.ep, row.check, r.Budget,
				DefaultBudgets.of(row.ep))
		}
	}
	if len(rep.Results) != len(rows) {
		t.Errorf("got %d rows, want %d\n%s", len(rep.Results), len(rows), table(rep))
	}
}

func TestRequestsMatchBothDialects(t *testing.T) {
	t.Parallel()
	f := newFake(t, nil)
	runCheck(t, f.options())

	// The test account, the dialects' bodies, the query-borne ids and the
	// tokens sent, as the fake saw them.
	var provisions, consumes, kbGets, resetQueries int
	for _, s := range f.requests() {
		if s.Token != "valid" {
			continue
		}
		switch s.Method + " " + strings.TrimSuffix(s.Path, "/") {
		case "POST /provision":
			provisions++
			id := s.Body["user_automation_id"]
			if id != float64(DefaultTestID) && id != "999999" {
				t.Errorf("provision: user_automation_id %v, want the test account", id)
			}
		case "POST /usage/consume":
			consumes++
			_, guide := s.Body["units"]
			_, older := s.Body["tokens_consumed"]
			if guide == older {
				t.Errorf("consume body %v: want exactly one of units, tokens_consumed",
					s.Body)
			}
		case "GET /kb/status":
			kbGets++
			if s.Query != "user_automation_id=999999" {
				t.Errorf("kb status GET query %q, want the test account", s.Query)
			}
		case "POST /kb/reset":
			if s.Query != "" {
				resetQueries++
			}
		}
	}
	if provisions != 3 || consumes != 2 || kbGets != 1 || resetQueries != 1 {
		t.Errorf("got %d provisions, %d consumes, %d KB GETs, %d reset queries; "+
			"want 3, 2, 1, 1\n%v", provisions, consumes, kbGets, resetQueries, f.requests())
	}
}

func TestHealthVerdicts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		handler    http.HandlerFunc
		wantHealth string
		wantReason []string
	}{
		{"missing uptime",
			answerWith(http.StatusOK, map[string]any{"status": "ok", "version": "1"}),
			"unhealthy", []string{`lacks "uptime"`, "only healthy"}},
		{"degraded status",
			answerWith(http.StatusOK, map[string]any{"status": "starting",
				"version": "1", "uptime": 1}),
			"degraded", []string{`"starting"`}},
		{"503 with a good body",
			answerWith(http.StatusServiceUnavailable, healthyBody),
			"unhealthy", []string{"status 503", "exactly 200"}},
		{"array body", answerWith(http.StatusOK, []any{healthyBody}),
			"unhealthy", []string{"not a JSON object"}},
		{"redirect", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/healthz", http.StatusTemporaryRedirect)
		}, "unhealthy", []string{"redirects (307", "/healthz"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFake(t, map[string]http.HandlerFunc{"GET /health": tt.handler})
			rep := runCheck(t, f.options())
			if rep.Listed || rep.Health != tt.wantHealth {
				t.Errorf("got listed %v, health %q; want not listed, %q",
					rep.Listed, rep.Health, tt.wantHealth)
			}
			wantRow(t, rep, Health, "platform classifier", StatusFail, tt.wantReason...)
		})
	}
}

func TestHealthRetriesLikeThePlatform(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	f := newFake(t, map[string]http.HandlerFunc{
		"GET /health": func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/health" && calls.Add(1) < 3 {
				w.WriteHeader(http.StatusOK)
				_, _ = w.Write([]byte("warming up")) // not JSON: the platform retries
				return
			}
			writeJSON(w, http.StatusOK, healthyBody)
		},
	})
	rep := runCheck(t, f.options())
	wantRow(t, rep, Health, "platform classifier", StatusOK, "healthy", "3 tries")
}

func TestHealthDoesNotRetryANon200(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	f := newFake(t, map[string]http.HandlerFunc{
		"GET /health": func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/health" {
				calls.Add(1)
			}
			writeJSON(w, http.StatusBadGateway, map[string]any{"detail": "x"})
		},
	})
	runCheck(t, f.options())
	if n := calls.Load(); n != 1 {
		t.Errorf("got %d health calls, want 1 (a non-200 is final)", n)
	}
}

func TestFailures(t *testing.T) {
	t.Parallel()
	slow := func(d time.Duration, v any) func(*fakeAutomation) http.HandlerFunc {
		return func(f *fakeAutomation) http.HandlerFunc {
			return func(w http.ResponseWriter, _ *http.Request) {
				f.clock.Advance(d)
				writeJSON(w, http.StatusOK, v)
			}
		}
	}
	fixed := func(h http.HandlerFunc) func(*fakeAutomation) http.HandlerFunc {
		return func(*fakeAutomation) http.HandlerFunc { return h }
	}
	redirect := fixed(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/") {
			http.Redirect(w, r, strings.TrimSuffix(r.URL.Path, "/"),
				http.StatusTemporaryRedirect)
			return
		}
		w.Header().Set("Allow", "POST")
		writeJSON(w, http.StatusMethodNotAllowed, map[string]any{"detail": "no"})
	})
	tests := []struct {
		name     string
		route    string
		handler  func(*fakeAutomation) http.HandlerFunc
		ep       Endpoint
		check    string
		contains []string
	}{
		{"provision 201", "POST /provision",
			fixed(answerWith(http.StatusCreated, compliantAnswer("POST", "/provision"))),
			Provision, "platform dialect", []string{"status 201", "exactly 200"}},
		{"provision not JSON", "POST /provision",
			fixed(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }),
			Provision, "platform dialect", []string{"not a JSON object"}},
		{"provision lacks integration_status", "POST /provision",
			fixed(answerWith(http.StatusOK, map[string]any{"success": true,
				"message": "m", "provisioned_at": "2025-01-10T16:54:49Z"})),
			Provision, "platform dialect", []string{`lacks "integration_status"`}},
		{"consume refusal as 402", "POST /usage/consume",
			fixed(answerWith(http.StatusPaymentRequired, map[string]any{"detail": "no"})),
			Consume, "guide dialect", []string{"status 402", "even for a refusal"}},
		{"consume remaining as a string", "POST /usage/consume",
			fixed(answerWith(http.StatusOK, map[string]any{"accepted": true,
				"remaining_demo_tokens": "4", "remaining_paid_tokens": 0,
				"message": "ok"})),
			Consume, "guide dialect", []string{`"remaining_demo_tokens" is a string`}},
		{"consume slower than 3 s", "POST /usage/consume",
			slow(4*time.Second, compliantAnswer("POST", "/usage/consume")),
			Consume, "guide dialect", []string{"took 4s", "over the 3s budget"}},
		{"provision slower than 10 s", "POST /provision",
			slow(11*time.Second, compliantAnswer("POST", "/provision")),
			Provision, "platform dialect", []string{"over the 10s budget"}},
		{"kb status array", "POST /kb/status",
			fixed(answerWith(http.StatusOK, []any{compliantAnswer("POST", "/kb/status")})),
			KBStatus, "POST, platform dialect", []string{"not a JSON object", "array"}},
		{"kb backup_status null", "POST /kb/status",
			fixed(answerWith(http.StatusOK, map[string]any{"status": "healthy",
				"backup_status": nil, "error_logs": []string{}})),
			KBStatus, "POST, platform dialect", []string{`"backup_status" is null`}},
		{"kb guide state unknown", "GET /kb/status",
			fixed(answerWith(http.StatusOK, map[string]any{"status": "fine",
				"last_updated": "2025-01-10T16:54:49Z", "total_documents": 1,
				"healthy": true})),
			KBStatus, "GET, guide dialect", []string{`"status" is "fine"`}},
		{"kb reset 404 though supported", "POST /kb/reset",
			fixed(answerWith(http.StatusNotFound, map[string]any{"detail": "x"})),
			KBReset, "POST, id in body (platform)", []string{"supports_reset true"}},
		{"auth accepts no token", "noauth POST /usage/consume",
			fixed(answerWith(http.StatusOK, compliantAnswer("POST", "/usage/consume"))),
			Consume, "no token", []string{"without a valid token"}},
		{"URL checker gets 404", "noauth GET /provision",
			fixed(answerWith(http.StatusNotFound, map[string]any{"detail": "x"})),
			Provision, "GET without token (URL checker)", []string{"only 200 or 405"}},
		{"trailing slash redirects", "noauth GET /usage/consume", redirect,
			Consume, "trailing slash toggled", []string{"redirects (307"}},
		{"provision redirects", "POST /provision",
			fixed(func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "/api/provision", http.StatusPermanentRedirect)
			}),
			Provision, "platform dialect", []string{"redirects (308", "never follows"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeWith(t, func(f *fakeAutomation) map[string]http.HandlerFunc {
				return map[string]http.HandlerFunc{tt.route: tt.handler(f)}
			})
			rep := runCheck(t, f.options())
			wantRow(t, rep, tt.ep, tt.check, StatusFail, tt.contains...)
			if rep.Listed {
				t.Errorf("listed despite a failure\n%s", table(rep))
			}
		})
	}
}

func TestWarningsKeepItListed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		route    string
		handler  http.HandlerFunc
		ep       Endpoint
		check    string
		contains []string
	}{
		{"numeric strings refused", "POST /provision",
			func(w http.ResponseWriter, r *http.Request) {
				var body map[string]any
				_ = json.NewDecoder(r.Body).Decode(&body)
				if _, isString := body["user_id"].(string); isString {
					writeJSON(w, http.StatusUnprocessableEntity, map[string]any{"detail": "x"})
					return
				}
				writeJSON(w, http.StatusOK, compliantAnswer("POST", "/provision"))
			},
			Provision, "repeated, numeric-string ids", []string{"status 422"}},
		{"405 without Allow", "noauth GET /usage/consume",
			answerWith(http.StatusMethodNotAllowed, map[string]any{"detail": "x"}),
			Consume, "GET without token (URL checker)", []string{"without an Allow"}},
		{"403 for a wrong token", "noauth POST /usage/consume",
			func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get(TokenHeader) == testToken {
					writeJSON(w, http.StatusOK, compliantAnswer("POST", "/usage/consume"))
					return
				}
				writeJSON(w, http.StatusForbidden, map[string]any{"detail": "x"})
			},
			Consume, "wrong token", []string{"status 403", "401"}},
		{"no KB", "POST /kb/status",
			answerWith(http.StatusNotFound, map[string]any{"detail": "no kb"}),
			KBStatus, "POST, platform dialect", []string{"no knowledge base", "skipped"}},
		{"repeat changes the grant", "POST /provision",
			func(w http.ResponseWriter, r *http.Request) {
				var body map[string]any
				_ = json.NewDecoder(r.Body).Decode(&body)
				a := compliantAnswer("POST", "/provision")
				if body["demo_tokens"] != nil {
					a["demo_tokens"] = 10
				}
				writeJSON(w, http.StatusOK, a)
			},
			Provision, "repeated, guide dialect", []string{"from 5 to 10", "idempotent"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFake(t, map[string]http.HandlerFunc{tt.route: tt.handler})
			rep := runCheck(t, f.options())
			wantRow(t, rep, tt.ep, tt.check, StatusWarn, tt.contains...)
			if !rep.Listed {
				t.Errorf("not listed for a warning\n%s", table(rep))
			}
		})
	}
}

func TestKBModes(t *testing.T) {
	t.Parallel()
	noKB := map[string]http.HandlerFunc{
		"POST /kb/status": answerWith(http.StatusNotFound, map[string]any{"detail": "no"}),
	}
	t.Run("no KB, auto", func(t *testing.T) {
		t.Parallel()
		f := newFake(t, noKB)
		rep := runCheck(t, f.options())
		for _, r := range rep.Results {
			if r.Endpoint == KBReset {
				t.Errorf("KB reset was called although there is no KB: %+v", r)
			}
		}
		if !rep.Listed {
			t.Errorf("not listed\n%s", table(rep))
		}
	})
	t.Run("no KB, required", func(t *testing.T) {
		t.Parallel()
		opts := newFake(t, noKB).options()
		opts.KB = KBRequire
		rep := runCheck(t, opts)
		wantRow(t, rep, KBStatus, "POST, platform dialect", StatusFail, "requires one")
	})
	t.Run("skipped", func(t *testing.T) {
		t.Parallel()
		f := newFake(t, nil)
		opts := f.options()
		opts.KB = KBSkip
		rep := runCheck(t, opts)
		wantRow(t, rep, KBStatus, "knowledge base", StatusSkip)
		for _, s := range f.requests() {
			if strings.HasPrefix(s.Path, "/kb/") {
				t.Errorf("KB called although skipped: %s", s)
			}
		}
	})
}

func TestPerEndpointURLs(t *testing.T) {
	t.Parallel()
	f := newFake(t, map[string]http.HandlerFunc{
		"GET /healthz": answerWith(http.StatusOK, healthyBody),
	})
	opts := Options{Token: testToken, Now: f.clock.Now, URLs: URLs{
		Health:    f.srv.URL + "/healthz",
		Provision: f.srv.URL + "/provision/",
		Consume:   f.srv.URL + "/usage/consume",
	}}
	rep := runCheck(t, opts)
	wantRow(t, rep, Health, "platform classifier", StatusOK)
	wantRow(t, rep, KBStatus, "knowledge base", StatusSkip, "no KB status URL")
	if got := find(t, rep, Provision, "platform dialect").URL; got != f.srv.URL+"/provision/" {
		t.Errorf("provision URL %q, want the one given", got)
	}
	if got := find(t, rep, Provision, "trailing slash toggled").URL; got != f.srv.URL+"/provision" {
		t.Errorf("toggled provision URL %q, want it without the slash", got)
	}
}

func TestTokenNeverInReport(t *testing.T) {
	t.Parallel()
	echo := func(w http.ResponseWriter, r *http.Request) {
		// A careless app that echoes the token in its errors.
		writeJSON(w, http.StatusInternalServerError,
			map[string]any{"detail": "bad token " + r.Header.Get(TokenHeader)})
	}
	f := newFake(t, map[string]http.HandlerFunc{
		"noauth POST /provision": echo, "noauth POST /usage/consume": echo,
	})
	rep := runCheck(t, f.options())
	var out bytes.Buffer
	if err := rep.WriteJSON(&out); err != nil {
		t.Fatal(err)
	}
	if err := rep.WriteTable(&out); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), testToken) {
		t.Fatalf("the token appears in the report:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "[service token]") {
		t.Errorf("want the echoed token replaced by [service token]:\n%s", out.String())
	}
}

func TestOptionErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts Options
	}{
		{"no token", Options{BaseURL: "http://127.0.0.1:1"}},
		{"no URL", Options{Token: "t"}},
		{"no consume URL", Options{Token: "t", URLs: URLs{
			Health: "http://127.0.0.1:1/health", Provision: "http://127.0.0.1:1/p"}}},
		{"ftp", Options{Token: "t", BaseURL: "ftp://127.0.0.1/"}},
		{"relative", Options{Token: "t", BaseURL: "/api"}},
		{"user info", Options{Token: "t", BaseURL: "http://u:p@127.0.0.1:1"}},
		{"base with query", Options{Token: "t", BaseURL: "http://127.0.0.1:1/?a=1"}},
		{"negative id", Options{Token: "t", BaseURL: "http://127.0.0.1:1",
			UserAutomationID: -1}},
		{"KB required without URL", Options{Token: "t", KB: KBRequire, URLs: URLs{
			Health: "http://127.0.0.1:1/h", Provision: "http://127.0.0.1:1/p",
			Consume: "http://127.0.0.1:1/c"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rep, err := Run(context.Background(), tt.opts)
			if !errors.Is(err, ErrOptions) || rep != nil {
				t.Errorf("got %v, %v; want ErrOptions and no report", rep, err)
			}
		})
	}
}

func TestCanceledRunReturnsWhatItHas(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	f := newFake(t, map[string]http.HandlerFunc{
		"GET /health": func(w http.ResponseWriter, _ *http.Request) {
			cancel() // the operator presses ^C during the first call
			writeJSON(w, http.StatusOK, healthyBody)
		},
	})
	rep, err := Run(ctx, f.options())
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if rep == nil || len(rep.Results) == 0 || len(rep.Results) > 2 {
		t.Fatalf("want the one or two rows checked before the cancel, got %+v", rep)
	}
}

func TestGivenClientNeverFollowsRedirects(t *testing.T) {
	t.Parallel()
	f := newFake(t, map[string]http.HandlerFunc{
		"noauth GET /health": func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/healthz", http.StatusFound)
		},
		"noauth GET /healthz": answerWith(http.StatusOK, healthyBody),
	})
	opts := f.options()
	opts.HTTPClient = &http.Client{} // would follow redirects by itself
	rep := runCheck(t, opts)
	wantRow(t, rep, Health, "platform classifier", StatusFail, "redirects (302")
	for _, s := range f.requests() {
		if s.Path == "/healthz" {
			t.Errorf("the redirect was followed: %s", s)
		}
	}
}

func TestHangEndsAtTheBudget(t *testing.T) {
	t.Parallel()
	f := newFake(t, map[string]http.HandlerFunc{
		"POST /usage/consume": func(_ http.ResponseWriter, r *http.Request) {
			<-r.Context().Done() // never answers; the checker gives up
		},
	})
	opts := f.options()
	opts.Budgets = Budgets{Consume: 50 * time.Millisecond}
	rep := runCheck(t, opts)
	wantRow(t, rep, Consume, "guide dialect", StatusFail, "no answer within the budget")
	if r := find(t, rep, Consume, "guide dialect"); r.Budget != 50*time.Millisecond {
		t.Errorf("budget %s, want the 50ms given", r.Budget)
	}
	wantRow(t, rep, Provision, "platform dialect", StatusOK) // others keep defaults
}

func TestNoServerIsAFailureNotAnError(t *testing.T) {
	t.Parallel()
	f := newFake(t, nil)
	opts := f.options()
	f.srv.Close() // nothing listens there any more
	rep := runCheck(t, opts)
	wantRow(t, rep, Health, "platform classifier", StatusFail, "no answer in 3 tries")
	if rep.Listed || rep.Health != "unhealthy" {
		t.Errorf("got listed %v, health %q; want not listed, unhealthy",
			rep.Listed, rep.Health)
	}
}

// TestEchoedTokenNeverQuoted: an answer that echoes the token where a
// quote would cut it (past the first 110 bytes) shows no part of it.
func TestEchoedTokenNeverQuoted(t *testing.T) {
	t.Parallel()
	echo := func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(strings.Repeat("x", 110) + testToken))
	}
	f := newFake(t, map[string]http.HandlerFunc{"GET /health": echo})
	rep := runCheck(t, f.options())
	for _, res := range rep.Results {
		if strings.Contains(res.Reason, testToken[:8]) {
			t.Errorf("%s %s: reason quotes part of the token: %q",
				res.Endpoint, res.Check, res.Reason)
		}
	}
}
